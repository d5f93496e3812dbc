"""Landing page and TLS choices without a browser: what the page says, that it escapes what it shows,
ships its assets, and which certificate HTTPS uses."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.gateway_upstream import FakeUpstream, GatewayProcess, start_gateway

from reranker_template.errors import ConfigError
from reranker_template.gateway import landing, tls
from reranker_template.plan.contract import Plan, write_plan
from reranker_template.protocol import HealthBody, HealthState
from reranker_template.settings import load_settings

TOKEN = "landing-token"
# The plan of a 2-GPU machine with USE_ALL_GPUS=false: both GPUs are visible, the layout uses one.
PLAN_JSON = {
    "schema_version": 1,
    "model": "BAAI/bge-reranker-v2-m3",
    "served_model_name": "bge<script>",
    "preset": "bge",
    "device": "cuda",
    "gpu_count": 2,
    "gpus_used": 1,
    "tensor_parallel_size": 1,
    "data_parallel_size": 1,
    "vllm_command": ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "BAAI/bge-reranker-v2-m3"],
    "gateway_port": 8000,
    "vllm_port": 18000,
    "reasons": ["USE_ALL_GPUS=false: one GPU, data parallel <off>"],
    "gpus": [
        {"index": 0, "name": "NVIDIA L4", "memory_mib": 23034, "compute_capability": 8.9, "uuid": "GPU-1"},
        {"index": 1, "name": "NVIDIA L4", "memory_mib": 23034, "compute_capability": 8.9, "uuid": "GPU-2"},
    ],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("gw-landing")
    (tmp / "state").mkdir()
    write_plan(tmp / "state" / "plan.json", Plan.from_json(PLAN_JSON))
    gw = start_gateway(
        tmp,
        {
            "API_KEYS": TOKEN,
            "PUBLIC_IPADDR": "203.0.113.9",
            # sshd on SSH_PORT=2222: the tunnel must use the port Vast maps to 2222, not to 22.
            "SSH_PORT": "2222",
            "VAST_TCP_PORT_22": "40001",
            "VAST_TCP_PORT_2222": "40022",
        },
    )
    upstream = FakeUpstream(gw.vllm_port).start()
    gw.wait_status("ready")
    yield gw
    gw.stop()
    upstream.stop()


@pytest.mark.slow  # the gateway runs as a process
def test_landing_page_content_and_headers(gateway: GatewayProcess) -> None:
    page = requests.get(gateway.url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-store"  # it shows the token
    html = page.text
    assert "bge&lt;script&gt;" in html and "bge<script>" not in html  # escaped everywhere
    assert "NVIDIA L4" in html and "22.5 GiB" in html and "Data parallel" in html
    assert "data parallel &lt;off&gt;" in html
    assert f"Bearer {TOKEN}" in html and gateway.url in html
    assert "ssh -p 40022 root@203.0.113.9 -N -L" in html
    assert 'href="/docs"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external resources: works offline


@pytest.mark.slow  # the gateway runs as a process
def test_gpus_used_is_the_layouts_count_not_the_visible_one(gateway: GatewayProcess) -> None:
    """USE_ALL_GPUS=false on a 2-GPU machine: the page lists both GPUs but says that vLLM uses one."""
    html = requests.get(gateway.url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    assert "<dt>GPUs used</dt><dd>1</dd>" in html
    assert html.count("<td>NVIDIA L4</td>") == 2


@pytest.mark.slow  # the gateway runs as a process
def test_static_assets_are_shipped_and_public(gateway: GatewayProcess) -> None:
    for name, kind in (("landing.js", "text/javascript"), ("landing.css", "text/css")):
        response = requests.get(f"{gateway.url}/_gateway/static/{name}", timeout=5)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(kind)
        assert response.content == landing.static_file(name)
    assert requests.get(f"{gateway.url}/_gateway/static/../app.py", timeout=5).status_code in (401, 404)
    assert requests.get(f"{gateway.url}/_gateway/static/nope.js", timeout=5).status_code == 404


def test_examples_are_valid_code() -> None:
    base, model = "http://1.2.3.4:5678", 'we"ird'
    python = landing.python_example(base, TOKEN, model)
    compile(python, "example", "exec")
    compile(landing.cohere_example(base, TOKEN, model), "example", "exec")
    curl = shlex.split(landing.curl_example(base, TOKEN, model).replace("\\\n", " "))
    body = json.loads(curl[curl.index("-d") + 1])
    assert body["model"] == model and f"Authorization: Bearer {TOKEN}" in curl
    assert "Authorization" not in landing.curl_example(base, None, model)


@pytest.mark.slow  # the gateway runs as a process
def test_examples_run_against_a_loopback_upstream(gateway: GatewayProcess) -> None:
    """The page's curl example, as printed, works against the gateway (here with a stand-in upstream)."""
    command = landing.curl_example(gateway.url, TOKEN, "test-model")
    result = subprocess.run(
        ["bash", "-c", command + " -sS --fail-with-body"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["results"]) == 2


def test_tls_choice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    vast_cert, vast_key = tmp_path / "instance.crt", tmp_path / "instance.key"
    settings = load_settings({"ENABLE_HTTPS": "true"})
    assert tls.choose_tls_files(settings, state, vast_cert, vast_key).origin == "self-signed"
    tls.generate_self_signed(vast_cert, vast_key, ["localhost", "127.0.0.1"])
    assert tls.choose_tls_files(settings, state, vast_cert, vast_key).origin == "vast"
    only_cert = load_settings({"ENABLE_HTTPS": "true", "TLS_CERT_FILE": str(vast_cert)})
    with pytest.raises(ConfigError, match="TLS_KEY_FILE"):
        tls.choose_tls_files(only_cert, state, vast_cert, vast_key)
    missing = load_settings({"TLS_CERT_FILE": str(tmp_path / "nope.crt"), "TLS_KEY_FILE": str(vast_key)})
    with pytest.raises(ConfigError, match="TLS_CERT_FILE"):
        tls.choose_tls_files(missing, state, vast_cert, vast_key)
    assert len(tls.fingerprint(vast_cert).split(":")) == 32


def test_a_non_commercial_licence_is_said_at_the_top_of_the_page() -> None:
    """Whoever opens the page of a CC-BY-NC model learns it before the examples; other licences sit in the plan."""

    def page(**plan: object) -> str:
        facts = landing.PageFacts(
            base_url="http://203.0.113.9:41234",
            token=TOKEN,
            model="zerank-2",
            health=HealthBody(HealthState.READY, "zerank-2"),
            plan=Plan.from_json({**PLAN_JSON, "model": "zeroentropy/zerank-2", **plan}),
            ssh_command="ssh -p 40022 root@203.0.113.9",
            vllm_port=18000,
        )
        return landing.render_landing(facts)

    html = page(license="CC-BY-NC-4.0", non_commercial=True)
    banner = html.index('id="licence"')
    assert "Non-commercial use only" in html and banner < html.index('id="try"')
    assert "<dt>License</dt><dd>CC-BY-NC-4.0: non-commercial use only</dd>" in html
    apache = page(license="Apache-2.0", non_commercial=False)
    assert 'id="licence"' not in apache and "<dt>License</dt><dd>Apache-2.0</dd>" in apache
    assert 'id="licence"' not in page()  # no preset, no licence known: nothing claimed
