"""The image's HEALTHCHECK command against real loopback servers: http, https (self-signed), 503."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.loopback import LoopbackServer, Reply, free_port

from reranker_template.gateway.tls import generate_self_signed
from reranker_template.protocol import HealthBody, HealthState
from reranker_template.serve.healthcheck import check

pytestmark = pytest.mark.slow  # loopback servers and the HEALTHCHECK command as a process


def _serve(status: int, tls: ssl.SSLContext | None = None) -> LoopbackServer:
    """A gateway's /health as the HEALTHCHECK sees it: `status` with a JSON body; 404 elsewhere."""
    body = {"status": "ok"} if status == 200 else {"status": "loading"}
    return LoopbackServer(tls=tls).answer("/health", Reply.json(body, status=status)).start()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, int]]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed(cert, key, ["127.0.0.1", "localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    running = {"http_ready": _serve(200), "http_loading": _serve(503), "https_ready": _serve(200, context)}
    yield {name: server.port for name, server in running.items()}
    for server in running.values():
        server.stop()


def test_ready_gateway_is_healthy(servers: dict[str, int]) -> None:
    healthy, detail = check({"GATEWAY_PORT": str(servers["http_ready"])})
    assert healthy, detail


def test_loading_gateway_is_unhealthy(servers: dict[str, int]) -> None:
    healthy, detail = check({"GATEWAY_PORT": str(servers["http_loading"])})
    assert not healthy and "503" in detail


@pytest.mark.parametrize("enable_https", ["true", "false"])
def test_self_signed_https_gateway_is_healthy(servers: dict[str, int], enable_https: str) -> None:
    # Even if ENABLE_HTTPS in the check's environment disagrees with the server, the other scheme is tried.
    healthy, detail = check({"GATEWAY_PORT": str(servers["https_ready"]), "ENABLE_HTTPS": enable_https})
    assert healthy, detail


def test_nothing_listening_is_unhealthy() -> None:
    healthy, detail = check({"GATEWAY_PORT": str(free_port())}, timeout=2)
    assert not healthy and "no answer" in detail


def test_the_command_the_image_runs(servers: dict[str, int]) -> None:
    """Exactly the HEALTHCHECK's command: exit status 0 when ready, 1 otherwise."""
    command = [sys.executable, "-m", "reranker_template.serve.healthcheck"]
    ok = subprocess.run(
        command,
        env={"GATEWAY_PORT": str(servers["https_ready"]), "ENABLE_HTTPS": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    loading = subprocess.run(
        command, env={"GATEWAY_PORT": str(servers["http_loading"])}, capture_output=True, text=True, timeout=60
    )
    assert loading.returncode == 1 and "503" in loading.stdout
    bad = subprocess.run(command, env={"GATEWAY_PORT": "not-a-port"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "GATEWAY_PORT" in bad.stdout


def test_the_line_names_the_gateways_state_and_reason() -> None:
    """The body is read as the gateway's /health body, so `docker inspect` shows why it is unhealthy."""
    body = HealthBody(HealthState.FAILED, "m", "failed", "pending", "CUDA out of memory").to_json()
    with LoopbackServer().answer("/health", Reply.json(body, status=503)) as server:
        healthy, detail = check({"GATEWAY_PORT": str(server.port)}, timeout=2)
    assert not healthy and f"http://127.0.0.1:{server.port}/health: 503 failed (CUDA out of memory)" in detail
