"""CPU_QUANTIZATION: whether CPU mode serves an int8 copy of the model, and where that copy lives.

Rule: `int8` (opt-in, CPU mode only) serves a W8A8 copy of an encoder cross-encoder: the encoder's linear
layers hold int8 weights (one scale per output channel) and vLLM quantizes their inputs per token as it
runs, with oneDNN's int8 matrix multiply; embeddings, LayerNorms, pooler and classifier stay float. The
linear layers are two thirds of a CPU forward pass (BENCHMARKS.md), so this is the one lever left once
threads and batches are right: measured 1.5-1.6x the float32 plan's pairs/s on 2 AVX2 cores without VNNI,
for scores within 0.03 of float32 (MEASURED_ERROR); CPUs with AVX-512 VNNI or AMX have int8 instructions.
It is opt-in because the scores change; the default plan's scores are the float32 (or half-precision) model's.

- Only architectures whose layer names the copy writer knows (BERT, RoBERTa, XLM-RoBERTa sequence
  classifiers: the ms-marco MiniLM and TinyBERT cross-encoders, bge-reranker-base/-large/-v2-m3); another
  architecture is refused, since guessing names would serve an unquantized or broken model.
- A GPU plan ignores the setting and says so: vLLM's GPU kernels have their own quantizations
  (`--quantization` in VLLM_ARGS), and a template may set the variable for every machine it runs on.
- `--quantization` in VLLM_ARGS together with CPU_QUANTIZATION=int8 is refused: one of them must go.
- The copy's directory is decided here (so `reranker plan` shows the command that runs): under the
  stack's models directory, named after the source (hub id and revision, or the source directory's name
  and a hash of its path), so each source has one copy and a restart reuses it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from reranker_template.errors import PlanError
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.contract import Device, QuantizedCopy
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import CpuQuantization, is_local_path

# Architectures whose encoder blocks are named encoder.layer.N.{attention.self.query|key|value,
# attention.output.dense, intermediate.dense, output.dense} in the checkpoint and in vLLM's model.
INT8_ARCHITECTURES = (
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
)
# ms-marco-MiniLM-L-12-v2 (BENCHMARKS.md, "int8"): 270 query-document pairs against the float32 model.
MEASURED_ERROR = (
    "scores within 0.03 of float32 (mean 0.0006) and the same top document in 23 of 23 lists, measured on "
    "ms-marco-MiniLM-L-12-v2"
)


def copy_directory(models_dir: Path, source: str, revision: str | None) -> Path:
    """Where the int8 copy of `source` (at `revision`) lives: one directory per source, stable across runs."""
    if is_local_path(source):
        resolved = os.path.abspath(os.path.expanduser(source))
        digest = hashlib.sha256(resolved.encode()).hexdigest()[:12]
        name = f"{Path(resolved).name}-{digest}"
    else:
        name = source.replace("/", "--") + (f"@{revision.replace('/', '--')}" if revision else "")
    return models_dir / "int8" / name


def plan_quantization(
    setting: CpuQuantization, device: Device, model: ModelInfo, user: UserArgs, models_dir: Path | None
) -> tuple[QuantizedCopy | None, str | None]:
    """The int8 copy to serve (None: the model as it is) and the reason line (None: nothing to say).

    PlanError when int8 is asked for in CPU mode and cannot be given (the module's rules).
    """
    if setting is CpuQuantization.NONE:
        return None, None
    if device is not Device.CPU:
        return None, (
            "CPU_QUANTIZATION=int8 applies to CPU mode only: this GPU plan serves the model's own weights "
            "(vLLM's GPU quantizations are a --quantization in VLLM_ARGS)"
        )
    if user.has("--quantization"):
        raise PlanError(
            f"VLLM_ARGS sets --quantization {user.value('--quantization')} and CPU_QUANTIZATION=int8 asks for our "
            "int8 copy: remove one of the two."
        )
    architecture = next((name for name in model.architectures if name in INT8_ARCHITECTURES), None)
    if architecture is None:
        found = ", ".join(model.architectures) or "an unknown architecture (no architectures in its config.json)"
        raise PlanError(
            f"CPU_QUANTIZATION=int8 writes int8 copies of encoder cross-encoders ({', '.join(INT8_ARCHITECTURES)}); "
            f"{model.name} is {found}: unset CPU_QUANTIZATION to serve it as it is."
        )
    if models_dir is None:
        raise ValueError("plan_quantization needs the stack's models directory to place the int8 copy")
    revision = user.value("--revision")
    directory = copy_directory(models_dir, model.name, revision)
    copy = QuantizedCopy(
        source=model.name,
        revision=revision,
        directory=str(directory),
        architecture=architecture,
        measured_error=MEASURED_ERROR,
    )
    return copy, (
        f"CPU_QUANTIZATION=int8: vLLM serves an int8 copy of the encoder's linear layers ({directory}, written "
        f"once before vLLM starts); opt-in because the scores change: {MEASURED_ERROR}"
    )
