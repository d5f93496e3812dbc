"""`reranker vast ...` end to end: the real vastai SDK against a fake Vast API on loopback.

What a user would notice: the filters and bodies Vast receives, the wait loop's progress, what is
printed and recorded, and that every API failure is one clear line with a non-zero exit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_vast import API_KEY, USER_ID, FakeGateway, FakeVast, Reply

from reranker_template import vast
from reranker_template.cli import main
from reranker_template.facts.model import inspect_model
from reranker_template.plan.layout import required_gpu_memory_gib
from reranker_template.release import IMAGE

pytest.importorskip("vastai")

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "fixtures" / "models"
FAST = ["--poll-interval", "0.01", "--timeout", "20"]


@pytest.fixture
def gateway():
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def fake(gateway):
    server = FakeVast(gateway_port=gateway.port).start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path, monkeypatch, fake):
    """HOME and XDG dirs in tmp_path (the vastai package writes there), VAST_URL at the fake."""
    values = {
        "HOME": tmp_path / "home",
        "XDG_CONFIG_HOME": tmp_path / "config",
        "XDG_CACHE_HOME": tmp_path / "cache",
        "XDG_DATA_HOME": tmp_path / "data",
        "XDG_STATE_HOME": tmp_path / "state",
        "HF_HOME": tmp_path / "hf",
    }
    for name, path in values.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("VAST_URL", fake.url + "/")  # a trailing slash must not break the URLs
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    monkeypatch.setenv("VASTAI_NO_UPDATE_CHECK", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MODEL_NAME", raising=False)
    return dict(os.environ)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["vast", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(env) -> dict:
    return json.loads((Path(env["XDG_CONFIG_HOME"]) / "reranker" / "instances.json").read_text())["instances"]


def need_mb(model: Path, tp: int = 1) -> float:
    return float(
        math.ceil(required_gpu_memory_gib(inspect_model(str(model), is_local=True), tensor_parallel_size=tp) * 1024)
    )


# ------------------------------------------------------------------------------------------------- search


def test_search_sends_filters_sized_for_the_model(env, fake, capsys):
    model = MODELS / "Qwen3-Reranker-8B"  # ~16 GB of weights: needs more than the 16 GB floor
    code, out, err = run(capsys, "search", "--model", str(model), "--max-price", "1.5", "--json")
    assert code == 0, err
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.body == {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "compute_cap": {"gte": 750},
        "gpu_ram": {"gte": need_mb(model)},
        "num_gpus": {"eq": 1},
        "reliability2": {"gte": 0.95},
        "direct_port_count": {"gte": 1},
        "static_ip": {"eq": True},
        "dph_total": {"lte": 1.5},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": 10,
        "allocated_storage": 40.0,
    }
    assert 16384 < need_mb(model) < 24564  # fits a 24 GB card, not a 16 GB one
    offers = json.loads(out)
    assert [o["id"] for o in offers] == [9002, 9001]  # cheapest first; too small, too old, unreliable left out
    assert offers[0]["gpu_name"] == "RTX 3090" and offers[0]["dph_total"] == 0.22


def test_search_table_with_the_default_floor(env, fake, capsys):
    # Metadata unknown (offline hub): Vast's recommended 16 GB per GPU.
    code, out, err = run(capsys, "search", "--model", "BAAI/bge-reranker-v2-m3", "--limit", "3")
    assert code == 0, err
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.body["gpu_ram"] == {"gte": 16000.0} and request.body["limit"] == 3
    for heading in ("GPU", "count", "VRAM/GPU", "$/h", "reliability", "location", "offer id"):
        assert heading in out
    lines = [line for line in out.splitlines() if "900" in line]
    assert [line.split()[-1] for line in lines] == ["9003", "9002", "9001"]
    assert "RTX A4000" in lines[0] and "16 GB" in lines[0] and "0.120" in lines[0] and "Quebec, CA" in lines[0]
    assert "reranker vast launch OFFER_ID" in err


def test_search_on_two_gpus_splits_a_big_model(env, fake, capsys):
    model = MODELS / "Giant-Reranker-35B"
    code, _, err = run(capsys, "search", "--model", str(model), "--gpus", "2", "--json")
    assert code == 1  # no two-GPU offer has 42 GB per GPU
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.body["num_gpus"] == {"eq": 2}
    assert request.body["gpu_ram"] == {"gte": need_mb(model, tp=2)}
    assert "no offer matches" in err and "--max-price" in err


def test_search_with_no_match_fails(env, fake, capsys):
    code, out, err = run(capsys, "search", "--max-price", "0.01")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no offer matches" in err and "$0.01/h" in err


# ------------------------------------------------------------------------------------------------- launch


def test_launch_waits_until_ready_and_records_the_endpoint(env, fake, gateway, capsys):
    gateway.script = [
        (503, {"status": "loading", "phase": "downloading"}),
        (503, {"status": "loading", "phase": "starting"}),
        (200, {"status": "ready"}),
    ]
    code, out, err = run(
        capsys,
        "launch",
        "9001",
        "--model",
        "BAAI/bge-reranker-v2-m3",
        "--vllm-args=--max-model-len 4096",
        "--label",
        "rerank-prod",
        "--yes",
        "--json",
        *FAST,
    )
    assert code == 0, err
    result = json.loads(out)
    key = result["api_key"]
    assert len(key) >= 40
    [create] = fake.seen("PUT", "/api/v0/asks/9001/")
    assert create.body == {
        "client_id": "me",
        "image": IMAGE,
        "env": {
            "-p 8000:8000": "1",
            "OPEN_BUTTON_PORT": "8000",
            "MODEL_NAME": "BAAI/bge-reranker-v2-m3",
            "VLLM_ARGS": "--max-model-len 4096",
            "USE_ALL_GPUS": "true",
            "API_KEYS": key,
        },
        "price": None,
        "disk": 40.0,
        "label": "rerank-prod",
        "extra": None,
        "onstart": None,
        "image_login": None,
        "python_utf8": False,
        "lang_utf8": False,
        "use_jupyter_lab": False,
        "jupyter_dir": None,
        "force": False,
        "cancel_unavail": True,
        "template_hash_id": None,
        "user": None,
        "runtype": "args",
    }
    instance_id = result["id"]
    url = f"http://127.0.0.1:{gateway.port}"
    assert result["url"] == url and result["model"] == "BAAI/bge-reranker-v2-m3"
    # No public key in the (isolated) ~/.ssh: the instance runs no sshd, so no tunnel is promised.
    assert result["ssh_tunnel"] is None and "SSH: no public key found" in err and "--ssh-key FILE" in err
    assert f"Authorization: Bearer {key}" in result["curl"] and f"{url}/v1/rerank" in result["curl"]

    # Progress: each state once, in order.
    order = [
        f"instance {instance_id}: created",
        f"instance {instance_id}: loading (pulling image)",
        f"instance {instance_id}: running (success, running)",
        "/health: loading (downloading)",
        "/health: loading (starting)",
        "/health: ready",
    ]
    positions = [err.index(line) for line in order]
    assert positions == sorted(positions)
    assert err.count("/health: loading (downloading)") == 1
    assert all(r.query == {"owner": "me"} for r in fake.seen("GET", f"/api/v0/instances/{instance_id}/"))
    assert {r.headers.get("Authorization") for r in gateway.seen("GET", "/health")} == {f"Bearer {key}"}

    path = Path(env["XDG_CONFIG_HOME"]) / "reranker" / "instances.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = records(env)[str(instance_id)]
    assert saved["api_key"] == key and saved["url"] == url and saved["offer_id"] == 9001
    assert saved["ssh_tunnel"] == result["ssh_tunnel"] and saved["gpu"] == "1x RTX 4090"


ED25519_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmK2F0w1h6bEm3Qm0cYx4YyS1o7g3m1nZbq5k1cQZ6Z alice@laptop"
RSA_PUB = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 alice@old-laptop"


def user_keys(env, **files: str) -> Path:
    ssh_dir = Path(env["HOME"]) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    for name, text in files.items():
        (ssh_dir / name.replace("_pub", ".pub")).write_text(text + "\n")
    return ssh_dir


def test_launch_prints_endpoint_key_curl_and_tunnel(env, fake, capsys):
    user_keys(env, id_rsa_pub=RSA_PUB, id_ed25519_pub=ED25519_PUB)
    code, out, err = run(capsys, "launch", "--cheapest", "--yes", *FAST)
    assert code == 0, err
    [create] = fake.seen("PUT")
    assert create.path == "/api/v0/asks/9003/"  # the cheapest that fits
    assert create.body["env"]["MODEL_NAME"] == "Qwen/Qwen3-Reranker-0.6B"
    # ~/.ssh/id_ed25519.pub comes first; with a key the image runs its sshd, so port 22 is published.
    assert create.body["env"]["SSH_PUBLIC_KEY"] == ED25519_PUB and create.body["env"]["-p 22:22"] == "1"
    assert "id_ed25519.pub (SSH_PUBLIC_KEY)" in err
    key = create.body["env"]["API_KEYS"]
    assert "endpoint:" in out and f"API key:    {key}" in out
    assert "curl http://127.0.0.1:" in out
    # The tunnel goes to the port Vast maps to 22/tcp on the instance's public IP.
    assert f"SSH tunnel: ssh -p {fake.ssh_host_port} root@127.0.0.1 -N -L 18000:localhost:18000" in out
    assert "reranker vast destroy" in out


def test_launch_with_ssh_key_file_records_the_tunnel(env, fake, capsys, tmp_path):
    key_file = tmp_path / "work.pub"
    key_file.write_text(RSA_PUB + "\n")
    code, out, err = run(capsys, "launch", "9001", "--ssh-key", str(key_file), "--yes", "--json", *FAST)
    assert code == 0, err
    [create] = fake.seen("PUT", "/api/v0/asks/9001/")
    assert create.body["env"]["SSH_PUBLIC_KEY"] == RSA_PUB and create.body["env"]["-p 22:22"] == "1"
    result = json.loads(out)
    tunnel = f"ssh -p {fake.ssh_host_port} root@127.0.0.1 -N -L 18000:localhost:18000"
    assert result["ssh_tunnel"] == tunnel
    saved = records(env)[str(result["id"])]
    assert saved["ssh_tunnel"] == tunnel and saved["ssh_key"] == str(key_file)
    code, out, err = run(capsys, "status", str(result["id"]))
    assert code == 0, err
    assert f"SSH tunnel: {tunnel}" in out


def test_launch_without_ssh_publishes_no_port_22(env, fake, capsys):
    user_keys(env, id_ed25519_pub=ED25519_PUB)
    code, out, err = run(capsys, "launch", "9001", "--no-ssh", "--yes", *FAST)
    assert code == 0, err
    [create] = fake.seen("PUT")
    assert "SSH_PUBLIC_KEY" not in create.body["env"] and "-p 22:22" not in create.body["env"]
    assert "SSH tunnel: none" in out
    instance_id = next(iter(records(env)))
    code, out, err = run(capsys, "status", instance_id)
    assert code == 0 and "SSH tunnel: none" in out


@pytest.mark.parametrize(
    "content, expected",
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----\n", "PUBLIC key"),
        ("", "a file with an OpenSSH public key"),
    ],
)
def test_a_bad_ssh_key_file_rents_nothing(env, fake, capsys, tmp_path, content, expected):
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(content)
    code, out, err = run(capsys, "launch", "9001", "--ssh-key", str(key_file), "--yes", *FAST)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--ssh-key" in err and expected in err
    assert "b3BlbnNzaC1rZXktdjE" not in err
    assert not fake.seen("PUT")


def test_launch_cheapest_moves_on_when_an_offer_is_taken(env, fake, capsys):
    fake.taken.add(9003)
    code, out, err = run(capsys, "launch", "--cheapest", "--yes", "--json", *FAST)
    assert code == 0, err
    assert [r.path for r in fake.seen("PUT")] == ["/api/v0/asks/9003/", "/api/v0/asks/9002/"]
    assert "offer 9003 was just taken" in err


def test_launch_of_a_taken_offer_fails_clearly(env, fake, capsys):
    fake.taken.add(9001)
    code, out, err = run(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1 and out == ""
    assert "reranker vast: offer 9001 is no longer available (Instance type by id 9001 is not available.)" in err
    assert "--cheapest" in err
    assert not (Path(env["XDG_CONFIG_HOME"]) / "reranker" / "instances.json").exists()


def test_launch_of_an_unknown_offer_fails_before_renting(env, fake, capsys):
    code, _, err = run(capsys, "launch", "1234", "--yes", *FAST)
    assert code == 1 and "offer 1234 is not available" in err
    assert fake.seen("PUT") == []


def test_launch_reports_an_exited_instance(env, fake, capsys):
    fake.script = [
        {"actual_status": "loading", "status_msg": "pulling [layer 3/7]"},
        {"actual_status": "exited", "status_msg": "Error response from daemon: OCI runtime create failed"},
    ]
    code, out, err = run(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1
    assert "instance 30000001: loading (pulling [layer 3/7])" in err  # Vast's text, verbatim
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "reranker vast: instance 30000001 exited: Error response from daemon: OCI runtime create failed"
    )
    assert "vastai logs 30000001" in last and "reranker vast destroy 30000001" in last
    assert records(env)["30000001"]["url"] is None  # the key is kept: the instance still exists


def test_wait_ends_when_vllm_keeps_failing(env, fake, gateway):
    gateway.script = [
        (503, {"status": "failed", "phase": "failed", "reason": "restarting"}),  # a failure the launcher recovers from
        (503, {"status": "loading", "phase": "starting"}),
        (503, {"status": "failed", "phase": "failed", "reason": "CUDA out of memory"}),
    ]
    client = vast.make_client(env)
    instance_id = vast.create_instance(client, 9001, vast.LaunchSpec(api_key="k"))
    lines: list[str] = []
    now = [0.0]
    options = vast.WaitOptions(timeout=1000, poll_interval=10, failed_grace=60)
    with pytest.raises(vast.InstanceFailed) as failure:
        vast.wait_until_ready(
            client,
            instance_id,
            "k",
            options=options,
            report=lines.append,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert str(failure.value).startswith(
        f"instance {instance_id}: vLLM failed to start (CUDA out of memory); see its logs"
    )
    assert lines[-3:] == [
        "/health: failed (restarting)",
        "/health: loading (starting)",
        "/health: failed (CUDA out of memory)",
    ]
    # Polls every 10 s: created, loading, running + failed (t=20), loading (t=30), failed from t=40 for 60 s.
    assert now[0] == 100.0


def test_a_200_that_is_not_the_gateway_is_not_ready(env, fake, gateway, capsys):
    gateway.script = [(200, {"hello": "proxy"}), (200, {"status": "ready"})]
    code, _, err = run(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 0 and "/health: unreachable (HTTP 200)" in err and "/health: ready" in err


def test_launch_gives_up_after_the_timeout(env, fake, gateway, capsys):
    gateway.script = [(503, {"status": "loading", "phase": "downloading"})]
    started = time.monotonic()
    code, _, err = run(capsys, "launch", "9001", "--yes", "--poll-interval", "0.02", "--timeout", "0.5")
    assert code == 1
    assert time.monotonic() - started < 10
    assert (
        "instance 30000001 was not ready after 0.5 s (last status: running (success, running), /health: loading (downloading))"
        in err
    )


def test_launch_with_insufficient_credit(env, fake, capsys):
    fake.credit = 0.1
    code, _, err = run(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1
    assert "not enough credit on your Vast account (Your account lacks credit; see the billing page.)" in err
    assert "cloud.vast.ai/billing" in err


def test_launch_refuses_bad_settings_before_renting(env, fake, capsys):
    code, _, err = run(capsys, "launch", "9001", "--yes", "--vllm-args", "--max-model-len '4096", *FAST)
    assert code == 2 and "VLLM_ARGS" in err
    code, _, err = run(capsys, "launch", "9001", "--yes", "--env", "not a pair", *FAST)
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run(capsys, "launch", *FAST)
    assert code == 2 and "OFFER_ID" in err
    assert fake.seen("PUT") == [] and fake.seen("POST") == []


def test_launch_without_yes_needs_a_terminal(env, fake, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    code, _, err = run(capsys, "launch", "9001", *FAST)
    assert code == 2 and "--yes" in err and fake.seen("PUT") == []


def test_launch_extra_env_and_https(env, fake, gateway, capsys):
    code, out, err = run(capsys, "launch", "9001", "--yes", "--json", "--https", "--env", "HF_TOKEN=hf_abc", *FAST)
    # The stand-in speaks plain HTTP: the wait falls back to it after HTTPS fails.
    assert code == 0, err
    env_sent = fake.seen("PUT")[0].body["env"]
    assert env_sent["ENABLE_HTTPS"] == "true" and env_sent["HF_TOKEN"] == "hf_abc"
    assert json.loads(out)["url"].startswith("http://127.0.0.1:")


def test_ctrl_c_while_waiting_offers_to_destroy(env, fake, gateway):
    gateway.script = [(503, {"status": "loading", "phase": "downloading"})]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reranker_template.cli",
            "vast",
            "launch",
            "9001",
            "--yes",
            "--poll-interval",
            "0.05",
            "--timeout",
            "60",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not gateway.seen("GET", "/health"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "launch never reached the /health wait"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("y\n", timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Destroy instance 30000001 now?" in err and "destroyed instance 30000001" in err
    [delete] = fake.seen("DELETE")
    assert delete.path == "/api/v0/instances/30000001/" and delete.body == {}
    assert records(env) == {}


# ------------------------------------------------------------------------------------------------- API errors


def test_bad_api_key(env, fake, capsys, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", "wrong")
    code, out, err = run(capsys, "search")
    assert code == 1 and out == ""
    assert err == (
        "reranker vast: Vast rejected the API key (Invalid user key): set VAST_API_KEY to a valid key "
        "from https://cloud.vast.ai/manage-keys/\n"
    )


def test_key_from_the_vastai_key_file(env, fake, capsys, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY")
    code, _, err = run(capsys, "search")
    assert code == 1 and "no Vast API key" in err and fake.requests == []
    key_file = Path(env["XDG_CONFIG_HOME"]) / "vastai" / "vast_api_key"
    key_file.parent.mkdir()
    key_file.write_text(API_KEY + "\n")
    code, _, err = run(capsys, "search")
    assert code == 0, err
    assert fake.seen("POST")[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_rate_limit_is_retried_after_retry_after(env, fake, capsys):
    fake.inject(
        "POST",
        "/api/v0/bundles/",
        Reply(429, {"success": False, "error": "rate_limited", "msg": "slow down"}, {"Retry-After": "0"}),
    )
    code, out, err = run(capsys, "search", "--json")
    assert code == 0, err
    assert len(fake.seen("POST", "/api/v0/bundles/")) == 2 and json.loads(out)


def test_long_rate_limit_is_reported(env, fake, capsys):
    fake.inject(
        "POST",
        "/api/v0/bundles/",
        Reply(429, {"success": False, "error": "rate_limited", "msg": "slow down"}, {"Retry-After": "3600"}),
    )
    code, out, err = run(capsys, "search")
    assert code == 1 and out == ""
    assert err == "reranker vast: Vast is rate limiting this API key (slow down): try again in 3600 s\n"
    assert len(fake.seen("POST")) == 1


def test_a_gateway_error_while_renting_is_not_retried(env, fake, capsys):
    fake.inject(
        "PUT",
        r"/api/v0/asks/\d+/",
        Reply(504, {"success": False, "error": "timeout", "msg": "Gateway Timeout"}),
        times=3,
    )
    code, _, err = run(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1
    assert "Vast answered 504 while renting offer 9001; the instance may have been created anyway" in err
    assert "reranker vast list" in err
    assert len(fake.seen("PUT")) == 1  # a retry could rent a second instance


def test_unreachable_api(env, capsys, monkeypatch):
    monkeypatch.setenv("VAST_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    code, _, err = run(capsys, "list")
    assert code == 1 and "cannot reach the Vast API while listing instances" in err


# ------------------------------------------------------------------------------------------------- list, status, destroy


def test_list_status_and_destroy(env, fake, gateway, capsys):
    code, out, err = run(capsys, "launch", "9002", "--yes", "--json", "--label", "mine", *FAST)
    assert code == 0, err
    launched = json.loads(out)
    instance_id = launched["id"]

    code, out, err = run(capsys, "list", "--json")
    assert code == 0, err
    [row] = json.loads(out)["instances"]
    assert row["id"] == instance_id and row["status"] == "running" and row["url"] == launched["url"]
    assert row["model"] == "Qwen/Qwen3-Reranker-0.6B" and row["label"] == "mine" and row["recorded"]

    code, out, _ = run(capsys, "list")
    assert str(instance_id) in out and launched["url"] in out

    code, out, err = run(capsys, "status", str(instance_id), "--json", "--show-key")
    assert code == 0, err
    status = json.loads(out)
    assert status["health"] == "ready" and status["api_key"] == launched["api_key"] and status["url"] == launched["url"]

    code, out, _ = run(capsys, "status", str(instance_id))
    assert "running" in out and "/health: ready" in out and launched["api_key"] not in out and "--show-key" in out

    code, _, err = run(capsys, "destroy", str(instance_id), "--yes")
    assert code == 0 and f"destroyed instance {instance_id}" in err
    [delete] = fake.seen("DELETE")
    assert delete.path == f"/api/v0/instances/{instance_id}/" and delete.body == {}
    assert records(env) == {}

    code, _, err = run(capsys, "destroy", str(instance_id), "--yes")
    assert code == 1 and f"instance {instance_id} does not exist on your account" in err
    code, _, err = run(capsys, "status", str(instance_id))
    assert code == 1 and f"instance {instance_id} does not exist on your account" in err


def test_list_mentions_recorded_instances_that_are_gone(env, fake, capsys):
    code, out, err = run(capsys, "launch", "9002", "--yes", "--no-wait", "--json")
    assert code == 0, err
    instance_id = json.loads(out)["id"]
    assert fake.seen("GET", f"/api/v0/instances/{instance_id}/") == []  # --no-wait: no polling
    code, out, err = run(capsys, "status", str(instance_id))  # polls: created, then loading
    code, out, err = run(capsys, "status", str(instance_id))
    assert code == 0 and "loading" in out and "endpoint" not in out
    code, out, err = run(capsys, "status", str(instance_id), "--json")
    assert json.loads(out)["health"] == "loading"  # the stand-in's first answer
    assert records(env)[str(instance_id)]["url"] == json.loads(out)["url"]  # the record learns its endpoint
    assert json.loads(out)["url"].startswith("http://127.0.0.1:")
    fake.instances.clear()
    code, out, err = run(capsys, "list")
    assert (
        code == 0
        and "no instances" in err
        and f"no longer on your account (destroyed elsewhere?): {instance_id}" in err
    )


# ------------------------------------------------------------------------------------------------- template


def test_template_is_created_then_updated(env, fake, capsys):
    fake.templates.append(
        {"id": 7, "hash_id": "someone-elses", "name": "vLLM Reranker (reranker-template)", "creator_id": 1}
    )
    expected = json.loads((REPO / "template.json").read_text())
    code, out, err = run(capsys, "template")
    assert code == 0, err
    [lookup] = fake.seen("GET", "/api/v0/template/")
    assert lookup.query["select_filters"] == {"name": {"eq": expected["name"]}}
    [create] = fake.seen("POST", "/api/v0/template/")
    assert create.body == {
        "name": expected["name"],
        "image": expected["image"],
        "tag": expected["tag"],
        "href": None,
        "repo": None,
        "env": expected["env"],
        "onstart": None,
        "jup_direct": False,
        "ssh_direct": False,
        "use_jupyter_lab": False,
        "runtype": "args",
        "use_ssh": False,
        "jupyter_dir": None,
        "docker_login_repo": None,
        "extra_filters": expected["extra_filters"],
        "recommended_disk_space": expected["recommended_disk_space"],
        "readme": expected["readme"],
        "readme_visible": True,
        "desc": expected["desc"],
        "private": True,
    }
    assert "created template" in out and "hash0001" in out

    code, out, err = run(capsys, "template", "--public")
    assert code == 0, err
    [update] = fake.seen("PUT", "/api/v1/template/")
    assert update.body["id"] == 500 and update.body["hash_id"] == "hash0001"
    assert {k: v for k, v in update.body.items() if k not in ("id", "hash_id")} == {**create.body, "private": False}
    assert "updated template" in out
    assert [t["creator_id"] for t in fake.templates].count(USER_ID) == 1  # updated in place, not duplicated
