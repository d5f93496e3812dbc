"""`reranker vast search` and `launch` end to end: the real vastai SDK against a fake Vast API on loopback.

What a user would notice: the filters and bodies Vast receives, the wait loop's progress, what is
printed and recorded, and that a refused rent is one clear line with a non-zero exit. After the rent
(failed waits, Ctrl-C, list, status, destroy, API errors, the template): test_vast_instances.py.
Every test here starts the loopback stand-ins: all are `slow`. The pure parts (the template body, the
GPU memory filter, the SDK Protocol) are tested in test_vast_template.py.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import pytest
from support.fake_vast import API_KEY, read_records, run_vast

from reranker_template.facts.model import inspect_model
from reranker_template.plan.memory import required_gpu_memory_gib
from reranker_template.release import IMAGE

pytest.importorskip("vastai")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "tests" / "fixtures" / "models"
FAST = ["--poll-interval", "0.01", "--timeout", "20"]


def need_gib(model: Path, tp: int = 1) -> float:
    need = required_gpu_memory_gib(inspect_model(str(model), is_local=True), tensor_parallel_size=tp)
    assert need is not None
    return need


def need_mib(model: Path, tp: int = 1) -> int:
    """Vast's gpu_ram unit (MiB, what cards report) for the model's need in GiB."""
    return math.ceil(need_gib(model, tp) * 1024)


# ------------------------------------------------------------------------------------------------- search


def test_search_sends_filters_sized_for_the_model(env, fake, capsys):
    model = MODELS / "Qwen3-Reranker-8B"  # ~16 GB of weights: needs more than the 16 GB floor
    code, out, err = run_vast(capsys, "search", "--model", str(model), "--max-price", "1.5", "--json")
    assert code == 0, err
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.body == {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "compute_cap": {"gte": 750},
        "gpu_ram": {"gte": need_mib(model)},
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
    assert 16384 < need_mib(model) < 24564  # fits a 24 GB card, not a 16 GB one
    offers = json.loads(out)
    assert [o["id"] for o in offers] == [9002, 9001]  # cheapest first; too small, too old, unreliable left out
    assert offers[0]["gpu_name"] == "RTX 3090" and offers[0]["dph_total"] == 0.22


def test_search_table_with_the_default_floor(env, fake, capsys):
    # Metadata unknown (offline hub): Vast's recommended 16 GB per GPU.
    code, out, err = run_vast(capsys, "search", "--model", "BAAI/bge-reranker-v2-m3", "--limit", "3")
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
    code, _, err = run_vast(capsys, "search", "--model", str(model), "--gpus", "2", "--json")
    assert code == 1  # no two-GPU offer has 42 GB per GPU
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.body["num_gpus"] == {"eq": 2}
    assert request.body["gpu_ram"] == {"gte": need_mib(model, tp=2)}
    assert "no offer matches" in err and "--max-price" in err


def test_search_with_no_match_fails(env, fake, capsys):
    code, out, err = run_vast(capsys, "search", "--max-price", "0.01")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no offer matches" in err and "$0.01/h" in err


def test_search_states_the_memory_floor_in_the_unit_it_came_in(env, fake, capsys):
    model = MODELS / "Qwen3-Reranker-8B"
    code, out, err = run_vast(capsys, "search", "--model", str(model))
    assert code == 0, err
    [request] = fake.seen("POST", "/api/v0/bundles/")
    assert request.body["gpu_ram"] == {"gte": need_mib(model)}  # Vast's unit: MiB, as cards report
    # The model's need is GiB, and said so (it used to be MiB / 1000, called GB).
    assert f"1 GPU with >= {need_gib(model):.1f} GiB each (what the model needs per GPU)" in err
    row = next(line for line in out.splitlines() if "9002" in line)
    assert "24 GB" in row  # a card as it is sold: the 3090's 24576 MiB


def test_min_gpu_ram_reads_gb_as_cards_are_sold(env, fake, capsys):
    code, out, err = run_vast(capsys, "search", "--min-gpu-ram", "24", "--json")
    assert code == 0, err
    assert fake.seen("POST")[0].body["gpu_ram"] == {"gte": 24000}
    offers = json.loads(out)
    # The 4090 reports 24564 MiB, a little under 24 GiB: still the 24 GB card the user asked for.
    assert [o["id"] for o in offers] == [9002, 9001, 9004]
    assert [o["gpu_ram_mib"] for o in offers] == [24576.0, 24564.0, 81559.0]
    code, _, err = run_vast(capsys, "search", "--min-gpu-ram", "80")
    assert code == 0 and "1 GPU with >= 80 GB each (--min-gpu-ram)" in err


# ------------------------------------------------------------------------------------------------- launch


def create_body(key: str) -> dict:
    """The create request the vastai SDK sends for `launch 9001 --model BAAI/bge-reranker-v2-m3 ...` below."""
    return {
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


def test_launch_waits_until_ready_and_records_the_endpoint(env, fake, gateway, capsys):
    gateway.script = [
        (503, {"status": "loading", "phase": "downloading"}),
        (503, {"status": "loading", "phase": "starting"}),
        (200, {"status": "ready"}),
    ]
    model = ["--model", "BAAI/bge-reranker-v2-m3", "--vllm-args=--max-model-len 4096"]
    code, out, err = run_vast(capsys, "launch", "9001", *model, "--label", "rerank-prod", "--yes", "--json", *FAST)
    assert code == 0, err
    result = json.loads(out)
    key = result["api_key"]
    assert len(key) >= 40
    [create] = fake.seen("PUT", "/api/v0/asks/9001/")
    assert create.body == create_body(key)
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
    saved = read_records(env)[str(instance_id)]
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
    code, out, err = run_vast(capsys, "launch", "--cheapest", "--yes", *FAST)
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
    code, out, err = run_vast(capsys, "launch", "9001", "--ssh-key", str(key_file), "--yes", "--json", *FAST)
    assert code == 0, err
    [create] = fake.seen("PUT", "/api/v0/asks/9001/")
    assert create.body["env"]["SSH_PUBLIC_KEY"] == RSA_PUB and create.body["env"]["-p 22:22"] == "1"
    result = json.loads(out)
    tunnel = f"ssh -p {fake.ssh_host_port} root@127.0.0.1 -N -L 18000:localhost:18000"
    assert result["ssh_tunnel"] == tunnel
    saved = read_records(env)[str(result["id"])]
    assert saved["ssh_tunnel"] == tunnel and saved["ssh_key"] == str(key_file)
    code, out, err = run_vast(capsys, "status", str(result["id"]))
    assert code == 0, err
    assert f"SSH tunnel: {tunnel}" in out


def test_launch_without_ssh_publishes_no_port_22(env, fake, capsys):
    user_keys(env, id_ed25519_pub=ED25519_PUB)
    code, out, err = run_vast(capsys, "launch", "9001", "--no-ssh", "--yes", *FAST)
    assert code == 0, err
    [create] = fake.seen("PUT")
    assert "SSH_PUBLIC_KEY" not in create.body["env"] and "-p 22:22" not in create.body["env"]
    assert "SSH tunnel: none" in out
    instance_id = next(iter(read_records(env)))
    code, out, err = run_vast(capsys, "status", instance_id)
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
    code, out, err = run_vast(capsys, "launch", "9001", "--ssh-key", str(key_file), "--yes", *FAST)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--ssh-key" in err and expected in err
    assert "b3BlbnNzaC1rZXktdjE" not in err
    assert not fake.seen("PUT")


def test_launch_cheapest_moves_on_when_an_offer_is_taken(env, fake, capsys):
    fake.taken.add(9003)
    code, out, err = run_vast(capsys, "launch", "--cheapest", "--yes", "--json", *FAST)
    assert code == 0, err
    assert [r.path for r in fake.seen("PUT")] == ["/api/v0/asks/9003/", "/api/v0/asks/9002/"]
    assert "offer 9003 was just taken" in err


def test_launch_of_a_taken_offer_fails_clearly(env, fake, capsys):
    fake.taken.add(9001)
    code, out, err = run_vast(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1 and out == ""
    assert "reranker: offer 9001 is no longer available (Instance type by id 9001 is not available.)" in err
    assert "--cheapest" in err
    assert not (Path(env["XDG_CONFIG_HOME"]) / "reranker" / "instances.json").exists()


def test_launch_of_an_unknown_offer_fails_before_renting(env, fake, capsys):
    code, _, err = run_vast(capsys, "launch", "1234", "--yes", *FAST)
    assert code == 1 and "offer 1234 is not available" in err
    assert fake.seen("PUT") == []


def test_launch_reports_an_exited_instance(env, fake, capsys):
    fake.script = [
        {"actual_status": "loading", "status_msg": "pulling [layer 3/7]"},
        {"actual_status": "exited", "status_msg": "Error response from daemon: OCI runtime create failed"},
    ]
    code, out, err = run_vast(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1
    assert "instance 30000001: loading (pulling [layer 3/7])" in err  # Vast's text, verbatim
    last = err.strip().splitlines()[-1]
    assert last.startswith("reranker: instance 30000001 exited: Error response from daemon: OCI runtime create failed")
    assert "vastai logs 30000001" in last and "reranker vast destroy 30000001" in last
    assert read_records(env)["30000001"]["url"] is None  # the key is kept: the instance still exists


def test_launch_with_insufficient_credit(env, fake, capsys):
    fake.credit = 0.1
    code, _, err = run_vast(capsys, "launch", "9001", "--yes", *FAST)
    assert code == 1
    assert "not enough credit on your Vast account (Your account lacks credit; see the billing page.)" in err
    assert "cloud.vast.ai/billing" in err


def test_launch_refuses_bad_settings_before_renting(env, fake, capsys):
    code, _, err = run_vast(capsys, "launch", "9001", "--yes", "--vllm-args", "--max-model-len '4096", *FAST)
    assert code == 2 and "VLLM_ARGS" in err
    code, _, err = run_vast(capsys, "launch", "9001", "--yes", "--env", "not a pair", *FAST)
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run_vast(capsys, "launch", *FAST)
    assert code == 2 and "OFFER_ID" in err
    assert fake.seen("PUT") == [] and fake.seen("POST") == []


def test_launch_without_yes_needs_a_terminal(env, fake, capsys, monkeypatch):
    with open(os.devnull) as no_terminal:
        monkeypatch.setattr(sys, "stdin", no_terminal)
        code, _, err = run_vast(capsys, "launch", "9001", *FAST)
    assert code == 2 and "--yes" in err and fake.seen("PUT") == []


def test_launch_extra_env_and_https(env, fake, gateway, capsys):
    code, out, err = run_vast(capsys, "launch", "9001", "--yes", "--json", "--https", "--env", "HF_TOKEN=hf_abc", *FAST)
    # The stand-in speaks plain HTTP: the wait falls back to it after HTTPS fails.
    assert code == 0, err
    env_sent = fake.seen("PUT")[0].body["env"]
    assert env_sent["ENABLE_HTTPS"] == "true" and env_sent["HF_TOKEN"] == "hf_abc"
    assert json.loads(out)["url"].startswith("http://127.0.0.1:")
