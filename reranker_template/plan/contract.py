"""The plan: what `make_plan` decided, and the only shape in which plan.json is written and read.

Rule: every later reader (the launcher, the gateway, the known-answer check, the landing page, offline
scoring) reads `Plan.from_json` and never re-derives a decision: what they need (the served name, the
ports, the max model length, the truncation policy, whether a score template is used, the GPUs actually
used) is a field here, decided once at plan time. plan.json carries `schema_version`; a reader of another
version refuses it with a message instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from reranker_template.errors import PlanError
from reranker_template.facts.gpus import Gpu
from reranker_template.facts.model import ModelSource
from reranker_template.fileio import read_json_object, write_json

SCHEMA_VERSION = 1


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class TruncationMode(StrEnum):
    """How a request that chose no truncation is cut to fit (plan/truncation.py explains both)."""

    PAIR = "pair"  # cut the joined pair to the model's limit: truncate_prompt_tokens=-1
    SPLIT = "split"  # cut query and document before the template composes them


@dataclass(frozen=True)
class TruncationPolicy:
    mode: TruncationMode
    max_model_len: int | None  # needed for SPLIT
    instruction_chars: int = 0  # RERANK_INSTRUCTION's length, rendered into the template


@dataclass(frozen=True)
class QuantizedCopy:
    """CPU_QUANTIZATION=int8: vLLM serves `directory`, an int8 copy of `source` the launcher writes before
    vLLM starts (serve/int8_copy.py); plan/quantization.py decides it."""

    source: str  # MODEL_NAME: a hub id or a directory
    revision: str | None  # the hub revision (--revision in VLLM_ARGS); None: the default branch
    directory: str  # where the copy is written and served from
    architecture: str  # the checkpoint's architecture, one plan/quantization.py knows the layers of
    measured_error: str = ""  # how far its scores are from float32, as measured (`reranker plan`, landing page)


@dataclass(frozen=True)
class Plan:
    model: str
    served_model_name: str
    preset: str | None
    device: Device
    gpu_count: int  # GPUs visible to the stack
    gpus_used: int  # GPUs the chosen layout actually uses (USE_ALL_GPUS=false: 1)
    tensor_parallel_size: int
    data_parallel_size: int
    vllm_command: tuple[str, ...]
    gateway_port: int
    vllm_port: int
    reasons: tuple[str, ...]
    vllm_env: dict[str, str] = field(default_factory=dict)  # extra environment for vLLM (no secrets)
    gpus: tuple[Gpu, ...] = ()
    model_source: ModelSource = ModelSource.UNKNOWN  # where the model's facts came from
    max_model_len: int | None = None  # --max-model-len in the final command (ours or the user's)
    score_template: bool = False  # the command passes a --chat-template (a score template)
    # vLLM scores a causal LM's yes/no tokens (--hf-overrides with is_original_qwen3_reranker or
    # classifier_from_token): such a model needs its authors' prompt format, i.e. a score template.
    yes_no_scoring: bool = False
    truncation: TruncationPolicy | None = None  # None: requests reach vLLM unchanged
    license: str | None = None  # the preset's licence as its model card states it (None: no preset, unknown)
    non_commercial: bool = False  # the licence forbids commercial use: `reranker plan` and the landing page say so
    quantized_copy: QuantizedCopy | None = None  # CPU_QUANTIZATION=int8: vLLM serves this copy
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["vllm_command"] = list(self.vllm_command)
        data["reasons"] = list(self.reasons)
        data["gpus"] = [asdict(gpu) for gpu in self.gpus]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """The plan in `data`; PlanError when it is of another schema version or malformed."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PlanError(
                f"plan.json has schema version {version!r}, this version of reranker-template reads "
                f"{SCHEMA_VERSION}: restart the stack so that it writes a new plan"
            )
        try:
            truncation = data.get("truncation")
            return cls(
                model=str(data["model"]),
                served_model_name=str(data["served_model_name"]),
                preset=data.get("preset"),
                device=Device(data["device"]),
                gpu_count=int(data["gpu_count"]),
                gpus_used=int(data["gpus_used"]),
                tensor_parallel_size=int(data["tensor_parallel_size"]),
                data_parallel_size=int(data["data_parallel_size"]),
                vllm_command=tuple(str(part) for part in data["vllm_command"]),
                gateway_port=int(data["gateway_port"]),
                vllm_port=int(data["vllm_port"]),
                reasons=tuple(str(reason) for reason in data["reasons"]),
                vllm_env={str(k): str(v) for k, v in (data.get("vllm_env") or {}).items()},
                gpus=tuple(_gpu(gpu) for gpu in data.get("gpus") or ()),
                model_source=ModelSource(data.get("model_source") or ModelSource.UNKNOWN),
                max_model_len=data.get("max_model_len"),
                score_template=bool(data.get("score_template")),
                yes_no_scoring=bool(data.get("yes_no_scoring")),
                truncation=_truncation(truncation) if truncation else None,
                license=data.get("license"),
                non_commercial=bool(data.get("non_commercial")),
                quantized_copy=_quantized_copy(data["quantized_copy"]) if data.get("quantized_copy") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"plan.json is malformed ({type(exc).__name__}: {exc}): restart the stack") from None


def _gpu(data: dict[str, Any]) -> Gpu:
    peers = data.get("p2p_peers")
    return Gpu(
        index=int(data["index"]),
        name=str(data["name"]),
        memory_mib=int(data["memory_mib"]),
        compute_capability=float(data["compute_capability"]),
        uuid=str(data.get("uuid") or ""),
        p2p_peers=tuple(int(p) for p in peers) if peers is not None else None,
    )


def _quantized_copy(data: dict[str, Any]) -> QuantizedCopy:
    revision = data.get("revision")
    return QuantizedCopy(
        source=str(data["source"]),
        revision=str(revision) if revision is not None else None,
        directory=str(data["directory"]),
        architecture=str(data["architecture"]),
        measured_error=str(data.get("measured_error") or ""),
    )


def _truncation(data: dict[str, Any]) -> TruncationPolicy:
    max_len = data.get("max_model_len")
    return TruncationPolicy(
        mode=TruncationMode(data["mode"]),
        max_model_len=int(max_len) if max_len is not None else None,
        instruction_chars=int(data.get("instruction_chars") or 0),
    )


def write_plan(path: Path, plan: Plan) -> None:
    write_json(path, plan.to_json())


def read_plan(path: Path) -> Plan:
    """The stack's plan.json; PlanError (with what to do) when it is missing or unusable."""
    data = read_json_object(path)
    if data is None:
        raise PlanError(f"{path} is missing or unreadable: start the stack with `reranker serve` (or `reranker boot`)")
    return Plan.from_json(data)
