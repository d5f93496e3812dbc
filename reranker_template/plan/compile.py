"""How much compilation vLLM does at start-up: chosen per device and model kind.

vLLM compiles the model with torch.compile (and, on a GPU, captures CUDA graphs) before it answers.
What that buys a reranker depends on where it runs:
- CPU, encoder-only cross-encoder (BERT, XLM-RoBERTa, ModernBERT...): `--optimization-level 0`.
  Measured on the bundled MiniLM-L12 cross-encoder on 2 cores (BENCHMARKS.md, "Cold start"): the compile
  costs ~38 s of an 83 s start and gains no throughput (22 pairs/s either way: the time goes to matmuls
  that oneDNN runs the same compiled or not). vLLM 0.32 on CPU also cannot load its compile cache back
  (it compiles again on every start), so the cost is paid on each restart, not once.
- CPU, decoder-based reranker (Qwen3-Reranker and friends): vLLM's default. Its fused kernels matter more
  for a decoder's larger layers and we have no measurement that says otherwise.
- GPU: vLLM's default. The compile artefacts are cached under VLLM_CACHE_ROOT on /workspace and reused
  by every later start on that volume, and CUDA graphs cut the per-call launch overhead that dominates
  small rerank batches.
Any compilation option in VLLM_ARGS (`-O`, `--optimization-level`, `--compilation-config`,
`--enforce-eager`) leaves the choice to the user: `VLLM_ARGS=-O3` turns the compile back on.
"""

from __future__ import annotations

from reranker_template.facts.model import ModelInfo
from reranker_template.plan.contract import Device
from reranker_template.plan.flags import Flag
from reranker_template.plan.user_args import UserArgs

# The user's ways of choosing compilation; any one of them means "leave it to me".
COMPILE_OPTIONS = ("--optimization-level", "--compilation-config", "--enforce-eager")


def compile_flags(device: Device, model: ModelInfo, user: UserArgs) -> tuple[list[Flag], list[str]]:
    """(our compile flags, the reason when we pass none: vLLM's default, or VLLM_ARGS chose)."""
    chosen = next((option for option in COMPILE_OPTIONS if user.has(option)), None)
    if chosen is not None:
        return [], [f"compilation: VLLM_ARGS sets {chosen}, so it is left to you"]
    if device is Device.CPU and model.is_encoder_only:
        why = (
            "CPU mode, encoder-only model: torch.compile adds ~40 s to every start (vLLM-CPU cannot reuse its "
            "compile cache) and gains no throughput here (BENCHMARKS.md); VLLM_ARGS=-O3 turns it back on"
        )
        return [Flag("--optimization-level", "0", why)], []
    if device is Device.CPU:
        return [], ["compilation: vLLM's default (CPU mode, decoder model: its fused kernels are kept)"]
    return [], ["compilation: vLLM's default (GPU: compile cache on VLLM_CACHE_ROOT, CUDA graphs for small batches)"]
