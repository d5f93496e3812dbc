"""The most pairs/s this CPU can give the bundled cross-encoder: its linear layers timed alone.

`python scripts/cpu_ceiling.py` counts the tokens of a pair of compare_peers' load (one query, one
document of ~128 words) with the model's tokenizer, then times the six linear layers of one encoder layer
(Q, K, V, attention output, the two FFN layers) on the kernels vLLM-CPU runs, at the plan's CPU batch
(2048 tokens), on every core this process may use. Those products are ~95% of a pair's arithmetic, so
`1 / (12 layers x their time per token x tokens per pair)` is an upper bound on pairs/s: attention, GELU,
LayerNorm, the server and the gateway only add to it. A goal above the bound needs other hardware or less
work per pair (a smaller model), not a better plan. BENCHMARKS.md quotes its output.

Kernels: `fp32` is what the default CPU plan runs where the CPU has no half precision (vLLM's oneDNN
matmul), `int8` what CPU_QUANTIZATION=int8 runs (oneDNN's int8 matmul after per-token quantization of the
activations), `bf16` (only on CPUs with AVX-512 bf16 or AMX) the half-precision plan's (the same oneDNN matmul in bf16).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from compare_peers import cpu_model

from reranker_template.client.bench import Workload
from reranker_template.facts.machine import read_cpu_info
from reranker_template.serve import bundled_model
from reranker_template.serve.int8_copy import quantize_rows

# (in, out) of each linear layer of one encoder layer, in the order the layer runs them.
LAYER_SHAPES = [(bundled_model.HIDDEN, bundled_model.HIDDEN)] * 4 + [
    (bundled_model.HIDDEN, bundled_model.INTERMEDIATE),
    (bundled_model.INTERMEDIATE, bundled_model.HIDDEN),
]
SQUARE = 2048  # a large square product: the kernel's best rate on this CPU, for the bound below
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class Ceiling:
    kernel: str
    gops: float  # multiply-adds x 2 per second, on the model's shapes at the plan's batch
    ms_per_pair: float  # the linear layers of all encoder layers, for one pair, wall time
    pairs_per_s: float
    best_gops: float  # the same kernel on a 2048 x 2048 x 2048 product
    pairs_per_s_at_best: float  # the ceiling if the model's shapes ran at best_gops: a kernel's limit


def seconds_per_call(call: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls: a ceiling takes the best case (a busy machine only slows a call),
    after two untimed calls (oneDNN builds its primitive on the first)."""
    call()
    call()
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def int8_linear(ops: Any, handler: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """What vLLM's int8 linear layer does per call: quantize the activations per token, then multiply."""
    quantized, scale, _ = ops.onednn_scaled_int8_quant(x)
    return ops.onednn_scaled_mm(handler, quantized, out, scale, None, None, None)  # type: ignore[no-any-return]


def layer_calls(kernel: str, tokens: int, shapes: Sequence[tuple[int, int]]) -> list[Callable[[], object]]:
    """One call per (in, out) shape, on random weights and `tokens` rows of random activations."""
    import vllm._custom_ops as ops

    calls: list[Callable[[], object]] = []
    for fan_in, fan_out in shapes:
        x = torch.randn(tokens, fan_in)
        weight = torch.randn(fan_out, fan_in)
        if kernel == "fp32":
            calls.append(partial(ops.onednn_mm, ops.create_onednn_mm(weight.t()), x, None))
        elif kernel == "bf16":
            x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)
            try:  # as vLLM does: oneDNN where it can build the matmul, else torch's
                calls.append(partial(ops.onednn_mm, ops.create_onednn_mm(weight.t()), x, None))
            except RuntimeError:
                calls.append(partial(torch.nn.functional.linear, x, weight))
        else:
            quantized, scale = quantize_rows(weight)  # as the int8 copy is written
            handler = ops.create_onednn_scaled_mm(quantized.t(), scale, torch.float32, True, False)
            calls.append(partial(int8_linear, ops, handler, x, torch.empty(tokens, fan_out)))
    return calls


def measure(kernel: str, batch_tokens: int, tokens_per_pair: float, repeats: int) -> Ceiling:
    layer_seconds = sum(seconds_per_call(call, repeats) for call in layer_calls(kernel, batch_tokens, LAYER_SHAPES))
    layer_macs = sum(fan_in * fan_out for fan_in, fan_out in LAYER_SHAPES)
    pair_seconds = layer_seconds / batch_tokens * tokens_per_pair * bundled_model.LAYERS
    (square,) = layer_calls(kernel, SQUARE, [(SQUARE, SQUARE)])
    best_gops = 2 * SQUARE**3 / seconds_per_call(square, repeats) / 1e9
    pair_ops_at_best = 2 * layer_macs * tokens_per_pair * bundled_model.LAYERS
    return Ceiling(
        kernel,
        2 * layer_macs * batch_tokens / layer_seconds / 1e9,
        pair_seconds * 1000,
        1 / pair_seconds,
        best_gops,
        best_gops * 1e9 / pair_ops_at_best,
    )


def tokens_per_pair(model_dir: Path, docs: int, doc_tokens: int) -> float:
    """The mean token count of a (query, document) pair of compare_peers' load, special tokens included."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bodies = Workload("rerank", docs, doc_tokens).payloads(8, None)
    lengths = [len(tokenizer(body["query"], doc)["input_ids"]) for body in bodies for doc in body["documents"]]
    return sum(lengths) / len(lengths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="tokens per forward pass (the CPU plan's)")
    parser.add_argument("--docs", type=int, default=16, help="documents per request of the load (compare_peers')")
    parser.add_argument("--doc-tokens", type=int, default=128, help="words per document of the load")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per layer (after two warm-up calls)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "reranker" / "compare-peers")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON after the table")
    args = parser.parse_args(argv)
    cpu = read_cpu_info()
    flags = [flag for flag in CPU_FLAGS if flag in cpu.flags]
    threads = cpu.cores
    torch.set_num_threads(threads)
    model_dir = bundled_model.ensure_built(args.work / "models").path
    per_pair = tokens_per_pair(model_dir, args.docs, args.doc_tokens)
    kernels = ["fp32", "int8"] + (["bf16"] if cpu.has_bf16 else [])
    rows = [measure(kernel, args.batch_tokens, per_pair, args.repeats) for kernel in kernels]
    print(f"\n{cpu_model()}, {threads} threads, flags: {' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)}")
    print(f"{per_pair:.1f} tokens per pair, {args.batch_tokens} tokens per forward pass\n")
    print("| kernel | GOP/s | linear layers, ms per pair | ceiling, pairs/s | GOP/s at 2048^3 | ceiling at that rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row.kernel} | {row.gops:.1f} | {row.ms_per_pair:.1f} | {row.pairs_per_s:.1f} | {row.best_gops:.1f} | "
            f"{row.pairs_per_s_at_best:.1f} |"
        )
    if args.json:
        print(json.dumps({"tokens_per_pair": per_pair, "threads": threads, "rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
