#!/usr/bin/env python3
"""Benchmark the gateway (results go in BENCHMARKS.md, section "Gateway"). Uses wrk (Debian: apt-get install wrk).

  alone    the gateway alone, pinned to one core, in front of a minimal upstream that answers a fixed
           rerank response instantly: the gateway's own ceiling in requests/s.
  compare  the same rerank load straight at vLLM and through the gateway, alternating runs, against a
           running stack: what the gateway costs in requests/s and median latency.

examples:
  .venv/bin/python scripts/bench_gateway.py alone --duration 10
  .venv/bin/python scripts/bench_gateway.py compare --direct http://127.0.0.1:18000 \\
      --gateway http://127.0.0.1:8000 --token "$(reranker token --token-only)" --model my-model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RERANK_BODY = {
    "query": "What are the health benefits of green tea?",
    "documents": [
        "Green tea contains antioxidants called catechins that may help reduce inflammation.",
        "Basketball is one of the most popular sports in the United States.",
        "Studies show that drinking green tea regularly can improve brain function.",
        "The price of coffee has risen by 20% this year.",
    ],
}
FAKE_RESPONSE = json.dumps(
    {
        "id": "rerank-bench",
        "model": "bench",
        "usage": {"total_tokens": 60},
        "results": [
            {"index": i, "document": {"text": d}, "relevance_score": 0.9 - i / 10}
            for i, d in enumerate(RERANK_BODY["documents"])
        ],
    }
).encode()


# --- a minimal keep-alive HTTP upstream (raw asyncio protocol: far faster than the gateway) ------------
class FastUpstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            match = re.search(r"(?im)^content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            body = b"" if head.startswith("GET /health") else FAKE_RESPONSE
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )


def run_upstream(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(FastUpstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


# --- helpers -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, expect: int | None = 200) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if expect is None or response.status == expect:
                    return
        except urllib.error.HTTPError as exc:
            if expect is None:
                return
            del exc
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not answer {expect} within {timeout:.0f} s")


def pinned(cpu: str | None, command: list[str]) -> list[str]:
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", cpu, *command]
    return command


def wrk(url: str, body: dict, token: str | None, connections: int, duration: int, cpu: str | None) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) of a POST load, from wrk's --latency report."""
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk)")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    script = f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n' + "".join(
        f'wrk.headers["{k}"] = {json.dumps(v)}\n' for k, v in headers.items()
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        lua = handle.name
    try:
        out = subprocess.run(
            pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", lua, url]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(lua)
    if "Non-2xx" in out:
        raise SystemExit(f"bench: non-2xx answers from {url}:\n{out}")
    result = {
        "rps": float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),
    }  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s*{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}_ms"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def show(label: str, result: dict[str, float]) -> None:
    extra = ""
    if "cpu_us" in result:
        extra = f"   CPU {result['cpu_us']:.0f} us/request = {1e6 / result['cpu_us']:.0f} req/s per busy core"
    print(
        f"{label:<30} {result['rps']:>8.0f} req/s   p50 {result.get('p50_ms', 0):6.2f} ms   "
        f"p90 {result.get('p90_ms', 0):6.2f} ms   p99 {result.get('p99_ms', 0):6.2f} ms{extra}",
        flush=True,
    )


# --- modes ---------------------------------------------------------------------------------------------
def bench_alone(args: argparse.Namespace) -> int:
    upstream_port, gateway_port = free_port(), free_port()
    token = "bench-token"
    state = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {
        **os.environ,
        "API_KEYS": token,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(gateway_port),
        "VLLM_PORT": str(upstream_port),
        "RERANKER_STATE_DIR": str(state),
        "RERANKER_LOG_DIR": str(state),
        "PYTHONPATH": str(REPO),
    }
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                pinned(args.load_cpu, [sys.executable, __file__, "upstream", "--port", str(upstream_port)])
            )
        )
        wait_http(f"http://127.0.0.1:{upstream_port}/health")
        with open(state / "stdout.log", "w") as gateway_out:  # the child keeps its own copy of the descriptor
            procs.append(
                subprocess.Popen(
                    pinned(args.gateway_cpu, [sys.executable, "-m", "reranker_template.cli", "gateway"]),
                    env=env,
                    stdout=gateway_out,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_http(f"http://127.0.0.1:{gateway_port}/health")
        body = {"model": "bench", **RERANK_BODY}
        print(
            f"gateway pinned to CPU {args.gateway_cpu}, upstream and wrk on CPU {args.load_cpu}; "
            f"{args.connections} connections, {args.duration} s per run",
            flush=True,
        )
        show(
            "upstream direct (reference)",
            wrk(
                f"http://127.0.0.1:{upstream_port}/v1/rerank",
                body,
                None,
                args.connections,
                args.duration,
                args.load_cpu,
            ),
        )
        results = []
        gateway_pid = procs[-1].pid
        for run in range(args.runs):
            before = cpu_seconds(gateway_pid)
            result = wrk(
                f"http://127.0.0.1:{gateway_port}/v1/rerank",
                body,
                token,
                args.connections,
                args.duration,
                args.load_cpu,
            )
            result["cpu_us"] = 1e6 * (cpu_seconds(gateway_pid) - before) / result["requests"]
            show(f"through gateway, run {run + 1}", result)
            results.append(result)
        print(
            f"gateway alone: median {statistics.median(r['rps'] for r in results):.0f} req/s on one core; "
            f"its CPU time per request: median {statistics.median(r['cpu_us'] for r in results):.0f} us "
            f"(= {1e6 / statistics.median(r['cpu_us'] for r in results):.0f} req/s if it had the core to itself)"
        )
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(state, ignore_errors=True)
    return 0


def bench_compare(args: argparse.Namespace) -> int:
    wait_http(args.direct + "/health")
    wait_http(args.gateway + "/health")
    body = {"model": args.model, **RERANK_BODY, "documents": RERANK_BODY["documents"] * (args.documents // 4 or 1)}
    print(
        f"{len(body['documents'])} documents per /v1/rerank, {args.connections} connections, "
        f"{args.duration} s per run, {args.runs} rounds of direct then gateway",
        flush=True,
    )
    wrk(args.direct + "/v1/rerank", body, None, args.connections, 3, None)  # warm-up
    direct, gated = [], []
    for run in range(args.runs):
        direct.append(wrk(args.direct + "/v1/rerank", body, None, args.connections, args.duration, None))
        show(f"direct vLLM, round {run + 1}", direct[-1])
        gated.append(wrk(args.gateway + "/v1/rerank", body, args.token, args.connections, args.duration, None))
        show(f"through gateway, round {run + 1}", gated[-1])
    d_rps, g_rps = statistics.mean(r["rps"] for r in direct), statistics.mean(r["rps"] for r in gated)
    d_p50 = statistics.median(r["p50_ms"] for r in direct)
    g_p50 = statistics.median(r["p50_ms"] for r in gated)
    print(
        f"gateway/direct throughput: {100 * g_rps / d_rps:.1f}% ({g_rps:.1f} vs {d_rps:.1f} req/s); "
        f"median latency added: {g_p50 - d_p50:+.2f} ms ({g_p50:.2f} vs {d_p50:.2f} ms)",
        flush=True,
    )
    # At concurrency 16 a CPU vLLM's latency is mostly queueing, and its noise hides the gateway's share;
    # one connection at a time shows what the gateway adds to each request.
    solo_direct, solo_gated = [], []
    for _run in range(args.runs):
        solo_direct.append(wrk(args.direct + "/v1/rerank", body, None, 1, args.duration, None))
        show("direct vLLM, 1 connection", solo_direct[-1])
        solo_gated.append(wrk(args.gateway + "/v1/rerank", body, args.token, 1, args.duration, None))
        show("through gateway, 1 connection", solo_gated[-1])
    d1 = statistics.median(r["p50_ms"] for r in solo_direct)
    g1 = statistics.median(r["p50_ms"] for r in solo_gated)
    print(f"one connection: median latency added by the gateway {g1 - d1:+.2f} ms ({g1:.2f} vs {d1:.2f} ms)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    alone = sub.add_parser("alone", help="the gateway alone against an instant upstream")
    alone.add_argument("--duration", type=int, default=10)
    alone.add_argument("--runs", type=int, default=3)
    alone.add_argument("--connections", type=int, default=64)
    alone.add_argument("--gateway-cpu", default="0")
    alone.add_argument("--load-cpu", default="1")
    alone.set_defaults(func=bench_alone)
    compare = sub.add_parser("compare", help="direct vLLM versus through the gateway")
    compare.add_argument("--direct", required=True, help="vLLM's URL, e.g. http://127.0.0.1:18000")
    compare.add_argument("--gateway", required=True, help="the gateway's URL, e.g. http://127.0.0.1:8000")
    compare.add_argument("--token", required=True)
    compare.add_argument("--model", required=True, help="the served model name")
    compare.add_argument("--documents", type=int, default=4)
    compare.add_argument("--connections", type=int, default=16)
    compare.add_argument("--duration", type=int, default=20)
    compare.add_argument("--runs", type=int, default=2)
    compare.set_defaults(func=bench_compare)
    upstream = sub.add_parser("upstream", help=argparse.SUPPRESS)
    upstream.add_argument("--port", type=int, required=True)
    upstream.set_defaults(func=lambda a: run_upstream(a.port) or 0)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
