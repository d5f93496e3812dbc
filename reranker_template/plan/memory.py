"""How much GPU memory a model needs, and over how many GPUs vLLM can split it.

The estimate per GPU is (weights + KV cache + activations) / tensor-parallel size, plus a fixed
CUDA/PyTorch/NCCL overhead, divided by vLLM's --gpu-memory-utilization (0.9): vLLM never plans to use
more of a GPU than that. Decoders keep a KV cache for two full 8192-token pairs in flight; encoders keep
none. The layout decision (layout.py) and `reranker vast search` (its GPU memory filter) both use it, so
the offers a user is shown are the ones the plan would accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from reranker_template.facts.model import ModelInfo

GIB = 1024**3
# vLLM's default --gpu-memory-utilization: it never plans to use more of a GPU than this.
GPU_MEMORY_UTILIZATION = 0.9
# Per GPU: CUDA context, PyTorch and NCCL buffers, CUDA graphs.
FIXED_OVERHEAD_GIB = 1.5
# Activations of a forward pass over a batch grow with the model's width; 5% of the weights covers them.
ACTIVATION_SHARE = 0.05
# KV cache a decoder reranker needs to be useful: two full 8192-token query+document pairs in flight.
KV_CACHE_TOKENS = 16384


@dataclass(frozen=True)
class MemoryNeed:
    """What one copy of the model needs on GPUs, before dividing by the tensor-parallel size."""

    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    weight_source: str

    def per_gpu_gib(self, tensor_parallel_size: int = 1) -> float:
        """Memory a GPU must have: its share of weights, KV cache and activations, its own overhead, headroom."""
        shared = (self.weights_gib + self.kv_cache_gib + self.activations_gib) / tensor_parallel_size
        return (shared + FIXED_OVERHEAD_GIB) / GPU_MEMORY_UTILIZATION

    def explain(self, tensor_parallel_size: int = 1) -> str:
        split = f" split over {tensor_parallel_size} GPUs" if tensor_parallel_size > 1 else ""
        kv = (
            f" + {self.kv_cache_gib:.1f} GiB KV cache ({KV_CACHE_TOKENS} tokens)"
            if self.kv_cache_gib
            else " (encoder: no KV cache)"
        )
        return (
            f"{self.per_gpu_gib(tensor_parallel_size):.1f} GiB per GPU: "
            f"{self.weights_gib:.1f} GiB weights ({self.weight_source})"
            f"{kv} + {self.activations_gib:.1f} GiB activations{split}, "
            f"+ {FIXED_OVERHEAD_GIB} GiB CUDA/PyTorch per GPU,"
            f" / {GPU_MEMORY_UTILIZATION} (vLLM's memory headroom)"
        )


def memory_need(model: ModelInfo, kv_cache_tokens: int = KV_CACHE_TOKENS) -> MemoryNeed | None:
    """The model's need, from its weight size (as loaded: a float32 checkpoint is served in 16 bits); None if
    the size is unknown."""
    loaded = model.loaded_weight_bytes
    if loaded is None:
        return None
    weights = loaded / GIB
    source = model.weight_source or "size known"
    if loaded != model.weight_bytes:
        source += ", float32 checkpoint served in 16 bits"
    return MemoryNeed(
        weights_gib=weights,
        kv_cache_gib=model.kv_bytes_per_token * kv_cache_tokens / GIB,
        activations_gib=weights * ACTIVATION_SHARE,
        weight_source=source,
    )


def required_gpu_memory_gib(model: ModelInfo, tensor_parallel_size: int = 1) -> float | None:
    """GPU memory (GiB) one GPU needs to run the model (weights + working memory + headroom); None if unknown.

    With `tensor_parallel_size` > 1: what each GPU of the tensor-parallel group needs.
    """
    need = memory_need(model)
    return None if need is None else round(need.per_gpu_gib(tensor_parallel_size), 2)


def tp_problem(model: ModelInfo, tp: int) -> str | None:
    """Why vLLM cannot split this model over `tp` GPUs, or None if it can (or we cannot tell).

    vLLM's rule: the attention heads must divide evenly; the KV heads must divide evenly too, or, when
    there are fewer KV heads than GPUs, the size must be a multiple of them (each is then copied).
    """
    if tp <= 1:
        return None
    heads, kv_heads, vision = model.num_attention_heads, model.num_key_value_heads, model.vision_attention_heads
    if heads and heads % tp:
        return f"{tp} does not divide its {heads} attention heads"
    # Fewer GPUs than KV heads: each GPU holds a whole number of them; more: each head is copied evenly.
    kv_ok = not kv_heads or kv_heads == heads or (kv_heads % tp == 0 if tp < kv_heads else tp % kv_heads == 0)
    if not kv_ok:
        return f"{tp} does not divide its {kv_heads} KV heads (nor is it a multiple of them)"
    if vision and vision % tp:
        return f"{tp} does not divide its vision tower's {vision} attention heads"
    return None


def valid_tp_sizes(model: ModelInfo, limit: int) -> list[int]:
    """Tensor-parallel sizes from 1 to `limit` that vLLM can split this model by (see `tp_problem`)."""
    return [tp for tp in range(1, limit + 1) if tp_problem(model, tp) is None]
