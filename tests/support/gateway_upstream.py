"""Loopback stand-ins for the gateway tests: a small HTTP upstream in place of vLLM, and the gateway
process itself started the way supervisord starts it (`python -m reranker_template.cli gateway`).

The upstream echoes what it received (path, query, headers, body size) so tests can see exactly what the
gateway forwards; it can be started late (loading -> ready) and stopped (ready -> down).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import requests

from support.loopback import LoopbackServer, Reply, Request, free_ports

REPO = Path(__file__).resolve().parents[2]
METRICS = "# HELP vllm:num_requests_running fake\nvllm:num_requests_running 0\n"


def _streamed(size: int) -> list[bytes]:
    return [b"x" * min(65536, size - start) for start in range(0, size, 65536)]


def _json_or_none(request: Request) -> Any:
    """The body as JSON when it is a small JSON document (what the gateway sent, e.g. with truncation added)."""
    if not request.body or len(request.body) > 65536:
        return None
    try:
        return request.json()
    except ValueError:
        return None


def vllm_echo(request: Request) -> Reply:
    """vLLM as far as the gateway tests need it: /health, /metrics, a rerank answer, a streamed body of
    unknown length (/big?size=N), and for every other route what the gateway forwarded (small JSON
    bodies parsed, under "json")."""
    if request.path == "/health":
        return Reply()
    if request.path == "/metrics":
        return Reply.text(METRICS)
    if request.path == "/big":
        size = int(parse_qs(request.query).get("size", ["3000000"])[0])
        return Reply(headers={"Content-Type": "application/octet-stream"}, chunks=_streamed(size))
    if request.path == "/v1/rerank" and request.body:
        data = request.json()
        docs = data.get("documents", [])
        results = [{"index": i, "document": {"text": d}, "relevance_score": 1.0 / (i + 1)} for i, d in enumerate(docs)]
        return Reply.json({"id": "rerank-fake", "model": data.get("model"), "results": results})
    seen = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": dict(request.headers),
        "body_bytes": len(request.body),
        "json": _json_or_none(request),
    }
    return Reply.json(seen, headers={"X-Upstream": "fake", "Set-Cookie": "upstream=1; Path=/"})


class FakeUpstream:
    """`vllm_echo` on 127.0.0.1:port (the gateway's VLLM_PORT), from `start()` until `stop()`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: LoopbackServer | None = None

    def start(self) -> FakeUpstream:
        self.server = LoopbackServer(vllm_echo, port=self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class GatewayProcess:
    url: str
    port: int
    vllm_port: int
    state_dir: Path
    log_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def log_text(self) -> str:
        path = self.log_dir / "gateway.log"
        return path.read_text() if path.exists() else ""

    def health(self, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + "/health", timeout=5, **kwargs)

    def wait_status(self, status: str, timeout: float = 15.0, **kwargs: Any) -> dict[str, Any]:
        """Poll /health until its "status" is `status` (a readiness wait, bounded)."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                body = self.health(**kwargs).json()
                if body.get("status") == status:
                    return body
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"/health never said {status!r}; last {body}; log:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_gateway(tmp_path: Path, env: Mapping[str, str] | None = None, https: bool = False) -> GatewayProcess:
    """The gateway process as supervisord runs it, with its own state/log dirs and free ports."""
    port, vllm_port = free_ports(2)
    state_dir, log_dir = tmp_path / "state", tmp_path / "logs"
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "OPEN_BUTTON_TOKEN",
            "API_KEYS",
            "WEB_PASSWORD",
            "VLLM_API_KEY",
            "ENABLE_AUTH",
            "ENABLE_HTTPS",
            "CONTAINER_ID",
            "PUBLIC_IPADDR",
        )
    }
    full_env.update(
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
        RERANKER_STATE_DIR=str(state_dir),
        RERANKER_LOG_DIR=str(log_dir),
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        VLLM_PORT=str(vllm_port),
        SERVED_MODEL_NAME="test-model",
        PYTHONPATH=str(REPO),
    )
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "reranker_template.cli", "gateway"],
        env=full_env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    scheme = "https" if https or full_env.get("ENABLE_HTTPS") == "true" else "http"
    gateway = GatewayProcess(f"{scheme}://127.0.0.1:{port}", port, vllm_port, state_dir, log_dir, proc, full_env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        gateway.stop()
        raise AssertionError("gateway did not start listening within 20 s")
    # Drain stdout in the background so a chatty gateway never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stdout and proc.stdout.read(), daemon=True).start()
    return gateway
