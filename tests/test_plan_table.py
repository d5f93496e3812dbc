"""Settings + facts -> the plan's fields that the plan's readers use, as one table.

The launcher, the gateway, the known-answer check, the landing page and offline scoring read these from
plan.json and never work them out again: the GPUs the layout uses, the final max model length, whether a
score template is used, the truncation policy, the served name; on a CPU, the KV cache vLLM sets aside.
Each row is a box (support.nvidia's inventories, or a CPU), a model as the offline Hugging Face cache
describes it, and the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from support.nvidia import cached_models, plan_on

from reranker_template.facts.model import ModelInfo, ModelSource
from reranker_template.plan.contract import Device, TruncationMode, TruncationPolicy
from reranker_template.plan.user_args import UserArgs

PAIR, SPLIT = TruncationMode.PAIR, TruncationMode.SPLIT
UNKNOWN_MODEL = "unknown"  # a model nothing is known about (no config.json, no size)


@dataclass(frozen=True)
class Row:
    box: str | None  # an INVENTORIES name, or None for a CPU
    model: str  # a fixture model (support.nvidia.MODEL_DIRS) or UNKNOWN_MODEL
    env: dict[str, str] = field(default_factory=dict)
    # expected:
    device: Device = Device.CUDA
    gpus_used: int = 1
    preset: str | None = None
    max_model_len: int | None = 8192
    score_template: bool = False
    truncation: TruncationPolicy | None = None
    served: str | None = None  # the served model name, when not the model's
    kv_cache: str | None = None  # CPU mode's --kv-cache-memory-bytes (None: not passed)
    compile_level: str | None = None  # --optimization-level (None: vLLM's default)


TABLE = {
    "cross-encoder on a CPU": Row(
        None,
        "bge",
        device=Device.CPU,
        gpus_used=0,
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
        kv_cache="0",  # encoder-only: no KV cache, and none of vLLM-CPU's default 92% reservation
        compile_level="0",  # encoder-only on a CPU: the compile costs ~40 s a start and gains nothing
    ),
    "VLLM_ARGS=-O3 turns the compile back on for a cross-encoder on a CPU": Row(
        None,
        "bge",
        {"VLLM_ARGS": "-O3"},
        device=Device.CPU,
        gpus_used=0,
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
        kv_cache="0",
        compile_level="3",
    ),
    "--enforce-eager in VLLM_ARGS: the compile level is left to vLLM": Row(
        None,
        "bge",
        {"VLLM_ARGS": "--enforce-eager"},
        device=Device.CPU,
        gpus_used=0,
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
        kv_cache="0",
    ),
    "Qwen3-Reranker on a CPU: a KV cache for two 8192-token pairs": Row(
        None,
        "0.6B",
        device=Device.CPU,
        gpus_used=0,
        preset="qwen3-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192),
        kv_cache="3584M",  # 2 x 8192 tokens x 28 layers x 8 KV heads x 128 x K and V x 4 bytes (float32 CPU)
    ),
    "the user's --max-model-len sizes the CPU KV cache": Row(
        None,
        "0.6B",
        {"VLLM_ARGS": "--max-model-len 2048"},
        device=Device.CPU,
        gpus_used=0,
        preset="qwen3-reranker",
        max_model_len=2048,
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 2048),
        kv_cache="896M",
    ),
    "the user's --gpu-memory-utilization on a CPU: no KV size of ours": Row(
        None,
        "0.6B",
        {"VLLM_ARGS": "--gpu-memory-utilization 0.5"},
        device=Device.CPU,
        gpus_used=0,
        preset="qwen3-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192),
    ),
    "Qwen3-Reranker on four A100s: data parallel over all": Row(
        "4xA100",
        "4B",
        gpus_used=4,
        preset="qwen3-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192),
    ),
    "USE_ALL_GPUS=false uses one of four": Row(
        "4xA100",
        "4B",
        {"USE_ALL_GPUS": "false"},
        gpus_used=1,
        preset="qwen3-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192),
    ),
    "tensor parallel 2 x data parallel 2": Row(
        "4xA100",
        "giant",
        gpus_used=4,
        preset="cross-encoder",
        truncation=TruncationPolicy(PAIR, 8192),
    ),
    "user tensor parallel uses two of four": Row(
        "4xA100",
        "bge",
        {"VLLM_ARGS": "-tp 2"},
        gpus_used=2,
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
    ),
    "RERANK_INSTRUCTION is budgeted": Row(
        "1xT4",
        "0.6B",
        {"RERANK_INSTRUCTION": "Find the statute"},
        preset="qwen3-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192, instruction_chars=16),
    ),
    "jina composes its own prompt: split without a template": Row(
        "2xL4", "jina", gpus_used=2, preset="jina-reranker-m0", truncation=TruncationPolicy(SPLIT, 8192)
    ),
    "a user template switches a cross-encoder to split": Row(
        "2xL4",
        "bge",
        {"VLLM_ARGS": "--chat-template /t.jinja"},
        gpus_used=2,
        preset="bge-reranker",
        score_template=True,
        truncation=TruncationPolicy(SPLIT, 8192),
    ),
    "the user's --max-model-len is the plan's": Row(
        "2xL4",
        "bge",
        {"VLLM_ARGS": "--max_model_len=4096"},
        gpus_used=2,
        preset="bge-reranker",
        max_model_len=4096,
        truncation=TruncationPolicy(PAIR, 4096),
    ),
    "TRUNCATE=false: no policy": Row("1xT4", "4B", {"TRUNCATE": "false"}, preset="qwen3-reranker", score_template=True),
    "an unknown model: no length, cut to whatever vLLM derives": Row(
        "1xT4", UNKNOWN_MODEL, max_model_len=None, truncation=TruncationPolicy(PAIR, None)
    ),
    "a template and no known length: no budgets can be sized": Row(
        "1xT4", UNKNOWN_MODEL, {"VLLM_ARGS": "--chat-template /t.jinja"}, max_model_len=None, score_template=True
    ),
    "RERANKER_PRESET=none drops the template and its split": Row(
        "1xT4", "4B", {"RERANKER_PRESET": "none"}, truncation=TruncationPolicy(PAIR, 8192)
    ),
    "SERVED_MODEL_NAME": Row(
        "1xT4",
        "bge",
        {"SERVED_MODEL_NAME": "rr"},
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
        served="rr",
    ),
    "--served-model-name in VLLM_ARGS wins": Row(
        "1xT4",
        "bge",
        {"SERVED_MODEL_NAME": "rr", "VLLM_ARGS": "--served-model-name mine"},
        preset="bge-reranker",
        truncation=TruncationPolicy(PAIR, 8192),
        served="mine",
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    found = cached_models(tmp_path_factory.mktemp("hf") / "hub")
    found[UNKNOWN_MODEL] = ModelInfo(name="someone/unknown-reranker", source=ModelSource.UNKNOWN)
    return found


@pytest.mark.parametrize("case", sorted(TABLE))
def test_the_plan_records_what_its_readers_need(models: dict[str, ModelInfo], case: str) -> None:
    row = TABLE[case]
    model = models[row.model]
    plan = plan_on(row.box, model, **row.env)
    assert plan.device is row.device
    assert (plan.gpus_used, plan.preset, plan.max_model_len) == (row.gpus_used, row.preset, row.max_model_len)
    assert plan.score_template is row.score_template
    assert plan.truncation == row.truncation
    assert plan.served_model_name == (row.served or model.name)
    assert plan.gpus_used <= plan.gpu_count
    assert plan.model_source == model.source
    assert UserArgs(plan.vllm_command).value("--kv-cache-memory-bytes") == row.kv_cache
    assert UserArgs(plan.vllm_command).value("--optimization-level") == row.compile_level


@pytest.mark.parametrize("case", sorted(TABLE))
def test_the_plan_explains_its_truncation_policy(models: dict[str, ModelInfo], case: str) -> None:
    row = TABLE[case]
    plan = plan_on(row.box, models[row.model], **row.env)
    [line] = [r for r in plan.reasons if r.startswith("truncation: ")]
    if plan.truncation is None:
        assert line.startswith("truncation: off")
        assert ("TRUNCATE=false" in line) == (row.env.get("TRUNCATE") == "false")
    else:
        assert line.startswith("truncation: on")
        assert ("a quarter of the context" in line) == (plan.truncation.mode is SPLIT)
