#!/usr/bin/env python3
"""What the Vast Serverless worker adds to a rerank, against the gateway (BENCHMARKS.md, "Serverless worker").

Starts the stack in serverless mode on this machine (`reranker serve` with MASTER_TOKEN set, the default
model, TLS off), with the test suite's stand-ins of Vast's router and console (tests/support), waits until
the worker has reported itself ready, then sends the same rerank, one at a time, along four paths:

  vllm      straight to vLLM (127.0.0.1:VLLM_PORT)
  gateway   through the gateway, with the token
  worker    to the worker with a signed envelope (signature checked), as Vast's router hands it out
  routed    RerankerClient.for_serverless: the vastai SDK asks the (loopback) router, then the worker

and prints p50/p95/mean latency per path. On Vast the router is a remote service, so `routed` adds a
network round trip there that this loopback figure does not show.

  .venv/bin/python scripts/bench_serverless.py --requests 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.fake_serverless import ENDPOINT, FakeRouter, StandInCa  # noqa: E402
from support.fake_vast import API_KEY, USER_ID, FakeVast  # noqa: E402
from support.loopback import free_ports  # noqa: E402

from reranker_template.client import RerankerClient  # noqa: E402

TOKEN = "bench-token"
QUERY = "What are the health benefits of green tea?"
PASSAGE = "green tea contains catechins, antioxidants studied for their effects on health. " * 6
LOADS = {  # a search system's rerank, and a tiny one where only the fixed cost per request shows
    "16 docs x ~100 tokens": [f"Document {i}: {PASSAGE}" for i in range(16)],
    "1 doc x 4 tokens": ["green tea"],
}


def measure(name: str, call: Callable[[], None], count: int) -> dict[str, float | str]:
    for _ in range(3):  # warm-up: connections, caches
        call()
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return {
        "path": name,
        "p50_ms": round(1000 * statistics.median(seconds), 1),
        "p95_ms": round(1000 * seconds[int(0.95 * (len(seconds) - 1))], 1),
        "mean_ms": round(1000 * statistics.fmean(seconds), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="requests per path (default 100)")
    args = parser.parse_args()

    console = FakeVast().start()
    console.root_certificate = StandInCa().pem()
    console.endpoints[1] = {
        "id": 1,
        "endpoint_name": ENDPOINT,
        "api_key": "endpoint-key",
        "user_id": USER_ID,
        "created_at": 0.0,
    }
    router = FakeRouter("endpoint-key").start()
    gateway_port, vllm_port, worker_port = free_ports(3)
    state = Path(tempfile.mkdtemp(prefix="bench-serverless-"))
    env = {
        **os.environ,
        "RERANKER_STATE_DIR": str(state),
        "GATEWAY_PORT": str(gateway_port),
        "VLLM_PORT": str(vllm_port),
        "API_KEYS": TOKEN,
        "MASTER_TOKEN": "bench",
        "CONTAINER_ID": "1",
        "PUBLIC_IPADDR": "127.0.0.1",
        "WORKER_PORT": str(worker_port),
        f"VAST_TCP_PORT_{worker_port}": str(worker_port),
        "REPORT_ADDR": router.url,
        "USE_SSL": "false",
    }
    log = (state / "stack.log").open("wb")
    stack = subprocess.Popen([str(Path(sys.executable).parent / "reranker"), "serve"], env=env, stdout=log, stderr=log)
    try:
        print("waiting for the stack and the worker's capacity benchmark ...", file=sys.stderr)
        report = router.wait_for_report(lambda r: r.get("loadtime", 0) > 0 or bool(r.get("error_msg")), 900)
        if report.get("error_msg"):
            print(f"the worker reported an error: {report['error_msg']}", file=sys.stderr)
            return 1
        session = requests.Session()
        worker_url = f"http://127.0.0.1:{worker_port}"
        signature = router.sign(worker_url)
        auth = {
            "cost": 1,
            "endpoint": ENDPOINT,
            "reqnum": 1,
            "request_idx": 1,
            "signature": signature,
            "url": worker_url,
        }
        client_env = {"VAST_URL": console.url, "VAST_API_KEY": API_KEY, "VAST_AUTOSCALER_URL": router.url}
        routed = RerankerClient.for_serverless(ENDPOINT, client_env)
        gateway = f"http://127.0.0.1:{gateway_port}/v1/rerank"

        def post(url: str, payload: object, headers: dict[str, str] | None = None) -> None:
            response = session.post(url, json=payload, headers=headers or {}, timeout=120)
            response.raise_for_status()

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        results = {}
        for load, documents in LOADS.items():
            body = {"query": QUERY, "documents": documents}
            results[load] = [
                measure("vllm", lambda b=body: post(f"http://127.0.0.1:{vllm_port}/v1/rerank", b), args.requests),
                measure("gateway", lambda b=body: post(gateway, b, bearer), args.requests),
                measure(
                    "worker",
                    lambda b=body: post(worker_url + "/v1/rerank", {"auth_data": auth, "payload": b}),
                    args.requests,
                ),
                measure("routed", lambda b=body: routed.request_json("POST", "/v1/rerank", b) and None, args.requests),
            ]
        routed.close()
        print(json.dumps({"max_perf": report["max_perf"], "loadtime_s": report["loadtime"], "results": results}))
        for load, rows in results.items():
            print(f"\n{load}, one request at a time, {args.requests} per path")
            print(f"{'path':<8} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
            for row in rows:
                print(f"{row['path']:<8} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['mean_ms']:>8}")
        return 0
    finally:
        stack.terminate()
        stack.wait(timeout=60)
        router.stop()
        console.stop()


if __name__ == "__main__":
    sys.exit(main())
