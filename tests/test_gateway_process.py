"""The gateway process against a loopback upstream: readiness (loading -> ready -> down), the launcher's
status file, body limits, malformed requests, streaming, metrics, the generated token, HTTPS, auth off."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import requests
from aiohttp import web
from support.gateway_upstream import REPO, FakeUpstream, GatewayProcess, start_gateway

from reranker_template.client.http import body_message
from reranker_template.gateway import health, responses
from reranker_template.gateway.tls import fingerprint
from reranker_template.plan.contract import Device, Plan, TruncationMode, TruncationPolicy, write_plan
from reranker_template.protocol import RETRY_AFTER_SECONDS, HealthBody, HealthState
from reranker_template.serve import status
from reranker_template.serve.status import VllmStatus

TOKEN = "process-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
RERANK = {"model": "test-model", "query": "q", "documents": ["a", "b"]}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, {"API_KEYS": TOKEN, "MAX_REQUEST_BYTES": "100000"})
    yield gw
    gw.stop()


def write_status(gw: GatewayProcess, **fields: object) -> None:
    """The launcher's status file, written the way the launcher writes it."""
    status.write_status(gw.state_dir / "vllm-status.json", VllmStatus.from_json({"updated": time.time(), **fields}))


@pytest.mark.slow
def test_loading_then_ready_then_down(gateway: GatewayProcess) -> None:
    # vLLM not started yet: /health and every proxied route answer 503 JSON with Retry-After.
    response = gateway.health()
    assert response.status_code == 503
    assert response.json()["status"] == "loading" and response.json()["model"] == "test-model"
    assert int(response.headers["Retry-After"]) > 0
    proxied = requests.post(gateway.url + "/v1/rerank", json=RERANK, headers=BEARER, timeout=5)
    assert proxied.status_code == 503 and proxied.headers["Content-Type"].startswith("application/json")
    assert proxied.json()["status"] == "loading" and "Retry-After" in proxied.headers

    write_status(gateway, phase="downloading", reason=None, quality_check="pending")
    assert gateway.wait_status("loading")["phase"] == "downloading"
    write_status(gateway, phase="quantizing", reason=None, quality_check="pending")  # CPU_QUANTIZATION=int8
    assert gateway.wait_status("loading")["phase"] == "quantizing"

    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        write_status(gateway, phase="ready", reason=None, quality_check="passed")
        body = gateway.wait_status("ready")
        assert body["quality_check"] == "passed" and body["model"] == "test-model"
        ok = requests.post(gateway.url + "/v1/rerank", json=RERANK, headers=BEARER, timeout=5)
        assert ok.status_code == 200 and [r["index"] for r in ok.json()["results"]] == [0, 1]
    finally:
        upstream.stop()
    # vLLM died: the next request gets a 503 JSON (never a reset or an HTML 502), and /health follows at once.
    dead = requests.post(gateway.url + "/v1/rerank", json=RERANK, headers=BEARER, timeout=5)
    assert dead.status_code == 503 and dead.json()["status"] == "down"
    assert gateway.health().status_code == 503
    assert gateway.health().json()["status"] == "down"


@pytest.mark.slow
def test_health_turns_503_soon_after_vllm_dies_without_traffic(gateway: GatewayProcess) -> None:
    upstream = FakeUpstream(gateway.vllm_port).start()
    gateway.wait_status("ready")
    upstream.stop()
    started = time.monotonic()
    gateway.wait_status("down", timeout=5)
    assert time.monotonic() - started < 3


@pytest.mark.slow
def test_failed_phase_is_reported_with_its_reason(gateway: GatewayProcess) -> None:
    write_status(gateway, phase="failed", reason="CUDA out of memory", quality_check="pending")
    body = gateway.wait_status("failed")
    assert body["reason"] == "CUDA out of memory"
    response = requests.get(gateway.url + "/v1/models", headers=BEARER, timeout=5)
    assert response.status_code == 503 and "CUDA out of memory" in response.json()["error"]["message"]


@pytest.mark.slow
def test_body_limit_malformed_json_and_streaming(gateway: GatewayProcess) -> None:
    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        gateway.wait_status("ready")
        big = {"model": "m", "query": "q", "documents": ["x" * 200_000]}
        too_big = requests.post(gateway.url + "/v1/rerank", json=big, headers=BEARER, timeout=10)
        assert too_big.status_code == 413
        assert "MAX_REQUEST_BYTES" in str(body_message(too_big.json()))

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold for chunked bodies too
            for _ in range(20):
                yield b"y" * 10_000

        chunked = requests.post(gateway.url + "/echo", data=chunks(), headers=BEARER, timeout=10)
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == 413
        small_chunked = requests.post(gateway.url + "/echo", data=iter([b"z" * 5000] * 3), headers=BEARER, timeout=10)
        assert small_chunked.status_code == 200 and small_chunked.json()["body_bytes"] == 15000

        for bad in (b'{"query": "q", "documents": [', b"\xff\xfe", b"not json at all"):
            response = requests.post(
                gateway.url + "/v1/rerank", data=bad, timeout=5, headers={**BEARER, "Content-Type": "application/json"}
            )
            assert response.status_code == 400, bad
            assert "not valid JSON" in str(body_message(response.json()))

        streamed = requests.get(gateway.url + "/big?size=3000000", headers=BEARER, timeout=10)
        assert streamed.status_code == 200 and len(streamed.content) == 3_000_000
    finally:
        upstream.stop()


@pytest.mark.slow
def test_undecodable_body_is_a_400_json_not_a_500(gateway: GatewayProcess) -> None:
    """Content-Encoding: gzip on bytes that are not gzip is the client's mistake: a 400 with aiohttp's
    message, whether the body is read whole or streamed, and vLLM is not blamed (it stays ready)."""
    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        gateway.wait_status("ready")
        gzip_json = {**BEARER, "Content-Encoding": "gzip", "Content-Type": "application/json"}
        whole = requests.post(gateway.url + "/v1/score", data=b"not gzip at all", headers=gzip_json, timeout=5)
        streamed = requests.post(  # chunked, no Content-Length: streamed to vLLM as it arrives
            gateway.url + "/echo", data=iter([b"not gzip", b" at all"]), headers=gzip_json, timeout=5
        )
        for response in (whole, streamed):
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error == {
                "message": "could not read the request body: Can not decode content-encoding: gzip",
                "type": "BadRequestError",
                "code": 400,
            }
        assert gateway.health().json()["status"] == "ready"
        time.sleep(0.7)  # the access log is written in batches twice a second
        assert "Traceback" not in gateway.log_text() and '" 500 ' not in gateway.log_text()
    finally:
        upstream.stop()


@pytest.mark.slow
def test_default_truncation_is_added_to_score_bodies_that_set_none(gateway: GatewayProcess) -> None:
    """No plan (a gateway in front of the user's own vLLM) and TRUNCATE on: a too long pair is cut to the
    model's limit, unless the request chose its own truncation; other routes pass through unchanged."""
    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        gateway.wait_status("ready")
        score = {"model": "test-model", "text_1": "q", "text_2": ["a"]}

        def forwarded(path: str, body: Mapping[str, object]) -> object:
            return requests.post(gateway.url + path, json=body, headers=BEARER, timeout=5).json()["json"]

        assert forwarded("/v1/score", score) == {**score, "truncate_prompt_tokens": -1}
        assert forwarded("/score/", score) == {**score, "truncate_prompt_tokens": -1}
        own = {**score, "truncate_prompt_tokens": 100}
        assert forwarded("/v1/score", own) == own
        assert forwarded("/v1/embeddings", score) == score
    finally:
        upstream.stop()


@pytest.mark.slow
def test_a_null_truncation_field_is_dropped_even_with_truncation_off(tmp_path: Path) -> None:
    """TRUNCATE=false sends bodies as they come, except a null truncation field (LangChain's CohereRerank sends
    "max_tokens_per_doc": null), which vLLM would refuse with a 400."""
    gateway = start_gateway(tmp_path, {"API_KEYS": TOKEN, "TRUNCATE": "false"})
    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        gateway.wait_status("ready")
        langchain = {**RERANK, "top_n": 2, "max_tokens_per_doc": None}
        sent = requests.post(gateway.url + "/v2/rerank", json=langchain, headers=BEARER, timeout=5).json()["json"]
        assert sent == {**RERANK, "top_n": 2}
        own = {**RERANK, "max_tokens_per_doc": 100}
        assert requests.post(gateway.url + "/v2/rerank", json=own, headers=BEARER, timeout=5).json()["json"] == own
    finally:
        upstream.stop()
        gateway.stop()


@pytest.mark.slow
def test_metrics_have_gateway_and_vllm_series(gateway: GatewayProcess) -> None:
    upstream = FakeUpstream(gateway.vllm_port).start()
    try:
        gateway.wait_status("ready")
        requests.post(gateway.url + "/v1/rerank", json=RERANK, headers=BEARER, timeout=5)
        requests.get(gateway.url + f"/random-{time.time()}", headers=BEARER, timeout=5)
        text = requests.get(gateway.url + "/metrics", headers=BEARER, timeout=5).text
    finally:
        upstream.stop()
    assert 'reranker_gateway_requests_total{route="/v1/rerank",status="200"} 1.0' in text
    assert 'route="other"' in text and "random-" not in text  # unknown paths do not create series
    assert "reranker_gateway_request_duration_seconds_bucket" in text
    assert "reranker_gateway_upstream_up 1.0" in text
    assert "vllm:num_requests_running 0" in text  # vLLM's own metrics follow ours


@pytest.mark.slow
def test_generated_token_url_in_log_and_reranker_token(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path)
    try:
        token_file = gw.state_dir / "token"
        deadline = time.monotonic() + 10
        while "Open http" not in gw.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        token = token_file.read_text().strip()
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert f"Open http://127.0.0.1:{gw.port}/?token={token}" in gw.log_text()
        assert (
            requests.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code
            == 503
        )
        assert requests.get(gw.url + "/v1/models", timeout=5).status_code == 401
        printed = subprocess.run(
            [sys.executable, "-m", "reranker_template.cli", "token"],
            env=gw.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() == f"http://127.0.0.1:{gw.port}/?token={token}"
    finally:
        gw.stop()
    # A restart reuses the same token.
    again = start_gateway(tmp_path)
    try:
        assert (again.state_dir / "token").read_text().strip() == token
    finally:
        again.stop()


@pytest.mark.slow
def test_reranker_token_without_any_token_says_what_to_do(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPEN_BUTTON_TOKEN", "API_KEYS", "WEB_PASSWORD", "VLLM_API_KEY")
    }
    env.update(RERANKER_STATE_DIR=str(tmp_path / "none"), HOME=str(tmp_path), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "reranker_template.cli", "token"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "no token yet" in result.stderr and "Traceback" not in result.stderr
    env["WEB_PASSWORD"] = "chosen"
    env["PUBLIC_IPADDR"], env["VAST_TCP_PORT_8000"] = "203.0.113.7", "41234"
    result = subprocess.run(
        [sys.executable, "-m", "reranker_template.cli", "token"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.stdout.strip() == "http://203.0.113.7:41234/?token=chosen"


@pytest.mark.slow
def test_https_with_a_generated_certificate(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"API_KEYS": TOKEN, "ENABLE_HTTPS": "true"})
    try:
        cert = gw.state_dir / "tls" / "self-signed.crt"
        assert cert.is_file()
        assert stat.S_IMODE(os.stat(gw.state_dir / "tls" / "self-signed.key").st_mode) == 0o600
        assert f"SHA-256 fingerprint {fingerprint(cert)}" in gw.log_text()
        response = requests.get(gw.url + "/health", verify=str(cert), timeout=5)  # verifies against our cert
        assert response.status_code == 503
        nav = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
        redirect = requests.get(
            f"{gw.url}/?token={TOKEN}", headers=nav, verify=str(cert), allow_redirects=False, timeout=5
        )
        assert redirect.status_code == 302 and "Secure" in redirect.headers["Set-Cookie"]
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on the TLS port is refused
            requests.get(f"http://127.0.0.1:{gw.port}/health", timeout=5)
    finally:
        gw.stop()


@pytest.mark.slow
def test_https_with_given_certificate_files(tmp_path: Path) -> None:
    from reranker_template.gateway.tls import generate_self_signed

    cert, key = tmp_path / "mine.crt", tmp_path / "mine.key"
    generate_self_signed(cert, key, ["127.0.0.1"])
    gw = start_gateway(tmp_path, {"ENABLE_HTTPS": "true", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    try:
        assert requests.get(gw.url + "/health", verify=str(cert), timeout=5).status_code == 503
        assert "environment certificate" in gw.log_text()
        assert not (gw.state_dir / "tls").exists()
    finally:
        gw.stop()


@pytest.mark.slow
def test_auth_off_warns_loudly_and_serves_without_token(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"ENABLE_AUTH": "false"})
    upstream = FakeUpstream(gw.vllm_port).start()
    try:
        gw.wait_status("ready")
        assert requests.get(gw.url + "/v1/models", timeout=5).status_code == 200
        page = requests.get(gw.url + "/", timeout=5)
        assert page.status_code == 200 and "auth is off" in page.text
        log = gw.log_text()
        assert "ENABLE_AUTH=false" in log and "WITHOUT A TOKEN" in log and " WARNING " in log
        assert not (gw.state_dir / "token").exists()
    finally:
        upstream.stop()
        gw.stop()


@pytest.mark.slow
def test_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items()}
        env.update(
            RERANKER_STATE_DIR=str(tmp_path / "s"),
            RERANKER_LOG_DIR=str(tmp_path / "l"),
            HOME=str(tmp_path),
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(port),
            VLLM_PORT="1",
            API_KEYS="x",
            PYTHONPATH=str(REPO),
        )
        result = subprocess.run(
            [sys.executable, "-m", "reranker_template.cli", "gateway"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert result.returncode == 1
    assert "cannot listen on" in result.stdout and "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "ready, ever, status, expected",
    [
        (True, True, {}, (200, "ready")),
        (False, False, {}, (503, "loading")),
        (False, False, {"phase": "provisioning"}, (503, "loading")),
        (False, False, {"phase": "ready"}, (503, "loading")),  # launcher ahead of our first poll
        (False, True, {"phase": "ready"}, (503, "down")),
        (False, True, {}, (503, "down")),
        (False, True, {"phase": "starting"}, (503, "loading")),  # restarted by supervisord
        (False, False, {"phase": "failed", "reason": "bad flag"}, (503, "failed")),
        (False, True, {"phase": "stopped"}, (503, "down")),
    ],
)
def test_health_report(ready: bool, ever: bool, status: dict[str, str], expected: tuple[int, str]) -> None:
    report = health.health_report(ready, ever, VllmStatus.from_json(status) if status else None, "m")
    assert (report.http_status, report.status) == expected
    assert report.model == "m"


def test_a_failure_the_launcher_gave_up_on_is_final_in_health() -> None:
    """`final` tells a waiting client (reranker vast launch) that only a change of settings helps."""
    retrying = VllmStatus.from_json({"phase": "failed", "reason": "x", "load_failures": 1})
    gave_up = VllmStatus.from_json({"phase": "failed", "reason": "x", "load_failures": status.MAX_LOAD_FAILURES})
    assert health.health_report(False, False, retrying, "m").to_json()["final"] is False
    body = health.health_report(False, False, gave_up, "m").to_json()
    assert body["final"] is True and body["status"] == "failed"
    assert HealthBody.from_json(body) == health.health_report(False, False, gave_up, "m")
    assert "final" not in health.health_report(True, True, gave_up, "m").to_json()  # ready says nothing of it


# --- what the gateway imports, and the one error shape, without a server ------------------------------

FORBIDDEN_IN_GATEWAY = (
    "reranker_template.plan.presets",
    "reranker_template.plan.user_args",
    "reranker_template.plan.build",
    "rich",
    "requests",
    "vastai",
)
# A stack's plan as the gateway reads it: a score-template model, so truncation splits the budget.
SPLIT_PLAN = Plan(
    model="Qwen/Qwen3-Reranker-0.6B",
    served_model_name="qwen3",
    preset="qwen3-reranker",
    device=Device.CPU,
    gpu_count=0,
    gpus_used=0,
    tensor_parallel_size=1,
    data_parallel_size=1,
    vllm_command=("vllm", "serve", "Qwen/Qwen3-Reranker-0.6B", "--max-model-len", "8192"),
    gateway_port=8000,
    vllm_port=18000,
    reasons=("a test plan",),
    max_model_len=8192,
    score_template=True,
    truncation=TruncationPolicy(TruncationMode.SPLIT, 8192),
)
IMPORT_CHECK = """
import asyncio, json, sys
from pathlib import Path

import reranker_template.cli.gateway  # `reranker gateway`: the CLI module, then the server it runs
from aiohttp.test_utils import TestClient, TestServer
from reranker_template.gateway import server, tls  # noqa: F401
from reranker_template.gateway.app import GatewayConfig, build_app
from reranker_template.paths import default_paths
from reranker_template.settings import load_settings


async def requests_through_the_app() -> tuple[list[int], str]:
    config = GatewayConfig(load_settings(), default_paths(), tokens=("t",), poll_interval=60)
    async with TestClient(TestServer(build_app(config))) as client:
        auth = {"Authorization": "Bearer t"}
        answers = [await client.get("/health"), await client.get("/", headers=auth)]
        answers.append(await client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}, headers=auth))
        return [answer.status for answer in answers], (await answers[0].json())["model"]


statuses, model = asyncio.run(requests_through_the_app())
print(json.dumps({"statuses": statuses, "model": model, "modules": sorted(sys.modules)}))
"""


@pytest.mark.slow
def test_gateway_imports_neither_the_preset_table_nor_the_vllm_args_parser(tmp_path: Path) -> None:
    """The gateway acts on what the plan decided (plan.json), so its process never loads the plan-time
    code, nor the client-side libraries: checked in a fresh interpreter that serves a few requests."""
    state = tmp_path / "state"
    write_plan(state / "plan.json", SPLIT_PLAN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "GATEWAY_"))}
    env.update(RERANKER_STATE_DIR=str(state), RERANKER_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["statuses"] == [503, 200, 503]  # vLLM is not running: loading
    assert report["model"] == SPLIT_PLAN.served_model_name  # the plan was read
    loaded = set(report["modules"])
    assert "reranker_template.plan.contract" in loaded and "reranker_template.gateway.proxy" in loaded
    assert not loaded & set(FORBIDDEN_IN_GATEWAY)


def test_error_bodies_have_one_shape() -> None:
    refused = responses.json_error(401, "invalid token", responses.ErrorType.UNAUTHORIZED)
    assert refused.content_type == "application/json"
    assert json.loads(_body(refused)) == {"error": {"message": "invalid token", "type": "Unauthorized", "code": 401}}
    large = responses.too_large(1000)
    assert large.status == 413 and large.headers["Connection"] == "close"
    assert json.loads(_body(large))["error"]["message"] == "request body larger than MAX_REQUEST_BYTES (1000 bytes)"


@pytest.mark.parametrize(
    "health, message",
    [
        (HealthBody(HealthState.LOADING, "m", "downloading"), "the model is loading (downloading); retry shortly"),
        (HealthBody(HealthState.FAILED, "m", "failed", reason="bad flag"), "vLLM failed: bad flag"),
        (HealthBody(HealthState.DOWN, reason="gone"), "vLLM is not answering (gone); retry shortly"),
    ],
)
def test_not_ready_says_why_and_when_to_retry(health: HealthBody, message: str) -> None:
    answer = responses.not_ready(health)
    assert answer.status == 503 and answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_SECONDS[health.status])
    assert json.loads(_body(answer)) == {
        "error": {"message": message, "type": "ServiceUnavailable", "code": 503},
        "status": str(health.status),
    }


def test_aiohttp_refusals_keep_their_specific_text() -> None:
    """aiohttp's own exceptions in our shape: its specific text when it gave one, else the reason phrase."""
    specific = responses.from_http_exception(web.HTTPBadRequest(text="bad multipart boundary"))
    assert json.loads(_body(specific))["error"] == {
        "message": "bad multipart boundary",
        "type": "BadRequestError",
        "code": 400,
    }
    generic = responses.from_http_exception(web.HTTPMethodNotAllowed("BREW", ["GET"]))
    assert json.loads(_body(generic))["error"]["message"] == "Method Not Allowed"
    server_side = responses.from_http_exception(web.HTTPServiceUnavailable())
    assert json.loads(_body(server_side))["error"]["type"] == "ServerError"


def _body(response: web.Response) -> bytes:
    assert isinstance(response.body, bytes)
    return response.body
