"""Model files before vLLM starts: download with progress, clear failures within the deadline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_hub import REVISION, FakeHub
from support.loopback import free_port
from support.stack_runner import http_get, minilm_dir, start_stack
from support.tmpfs import small_filesystem

pytestmark = pytest.mark.slow  # each test runs a fresh interpreter (or the stack) against a loopback hub

REPO = "sentence-transformers/all-MiniLM-L6-v2"


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}


def run_fetch(
    env: dict[str, str],
    model: str,
    deadline: float,
    offline: bool = False,
    token: str | None = None,
    revision: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """fetch_hub_model in a fresh interpreter (huggingface_hub reads HF_ENDPOINT/HF_HOME at import), logging
    to stdout as in the vLLM launcher."""
    code = (
        "import sys\n"
        "from reranker_template.errors import ModelUnavailable\n"
        "from reranker_template.serve.download import fetch_hub_model\n"
        "from reranker_template.serve.processes import setup_logging\n"
        "setup_logging()\n"
        "try:\n"
        f"    files = fetch_hub_model({model!r}, {token!r}, revision={revision!r}, deadline_seconds={deadline},"
        f" offline={offline})\n"
        "    print('PATH=' + files.path)\n"
        "except ModelUnavailable as exc:\n"
        "    print('UNAVAILABLE: ' + str(exc)); sys.exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=deadline + 60)


def test_hub_model_is_downloaded_with_progress_then_found_offline(tmp_path: Path) -> None:
    with FakeHub({REPO: minilm_dir()}) as hub:
        result = run_fetch(hub_env(tmp_path, hub.url), REPO, deadline=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"[download] downloading {REPO}" in result.stdout
        path = Path(result.stdout.split("PATH=")[1].strip())
        assert (path / "config.json").read_bytes() == (minilm_dir() / "config.json").read_bytes()
        assert (path / "model.safetensors").stat().st_size == (minilm_dir() / "model.safetensors").stat().st_size
    # The hub is gone now: the cached copy is used, with HF_HUB_OFFLINE or without it.
    again = run_fetch(hub_env(tmp_path, hub.url), REPO, deadline=6)
    assert again.returncode == 0 and "using the cached copy" in again.stdout, again.stdout + again.stderr
    offline = run_fetch(hub_env(tmp_path, hub.url), REPO, deadline=6, offline=True)
    assert offline.returncode == 0 and "using the cached copy" in offline.stdout


def test_unknown_repository_says_check_model_name(tmp_path: Path) -> None:
    with FakeHub({REPO: minilm_dir()}) as hub:
        result = run_fetch(hub_env(tmp_path, hub.url), "nobody/no-such-model", deadline=30)
    assert result.returncode == 3
    assert "UNAVAILABLE: no model nobody/no-such-model on the hub: check the name (MODEL_NAME)" in result.stdout


def test_gated_model_downloads_with_a_granted_token_at_a_revision(tmp_path: Path) -> None:
    gated = "org/gated-minilm"
    with FakeHub({gated: minilm_dir()}, gated=[gated], tokens={"hf_granted": [gated]}, tags=["v1"]) as hub:
        refused = run_fetch(hub_env(tmp_path, hub.url), gated, deadline=30)
        missing = run_fetch(hub_env(tmp_path, hub.url), gated, deadline=30, token="hf_granted", revision="v2")
        result = run_fetch(hub_env(tmp_path, hub.url), gated, deadline=30, token="hf_granted", revision="v1")
    assert refused.returncode == 3 and "is gated: accept its licence" in refused.stdout, refused.stdout
    assert missing.returncode == 3 and "has no revision 'v2'" in missing.stdout, missing.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    path = Path(result.stdout.split("PATH=")[1].strip())
    assert path.name == REVISION and (path / "model.safetensors").stat().st_size > 80_000_000


def test_a_disk_that_fills_up_during_the_download_says_so(tmp_path: Path) -> None:
    """Without the launcher's preflight (which would refuse first), the download itself runs out of space."""
    with FakeHub({REPO: minilm_dir()}) as hub, small_filesystem(tmp_path / "small", 40) as small:
        env = {**hub_env(tmp_path, hub.url), "HF_HOME": str(small / "hf")}
        result = run_fetch(env, REPO, deadline=30)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "UNAVAILABLE: the disk filled up while downloading" in result.stdout
    assert "point HF_HOME at a bigger volume" in result.stdout


def test_no_network_fails_within_the_deadline_with_advice(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    started = time.monotonic()
    result = run_fetch(hub_env(tmp_path, f"http://127.0.0.1:{closed}"), REPO, deadline=8)
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stdout + result.stderr
    assert "cannot reach the Hugging Face hub" in result.stdout
    assert "MODEL_NAME=/path/to/model" in result.stdout and "pre-download" in result.stdout
    assert elapsed < 8 + 30


@pytest.mark.vllm
def test_uncached_model_while_offline_ends_fatal_quickly_with_the_reason(tmp_path: Path) -> None:
    """The launcher's preflight failure: no vLLM start, no retry loop, the reason in /health."""
    stack = start_stack(tmp_path, "nobody/not-cached-anywhere", wait=False)
    try:
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and "FATAL" not in status:
            time.sleep(1)
            status = stack.supervisorctl("status", "vllm")
        assert "FATAL" in status, stack.log_text()[-3000:]
        code, body = http_get(stack.gateway_url + "/health")
        health = json.loads(body)
        assert code == 503 and health["status"] == "failed"
        assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in health["reason"]
        assert "starting vLLM" not in stack.log_text()
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("files", "skips_bin"),
    [
        (["config.json", "model.safetensors", "pytorch_model.bin"], True),  # both formats: safetensors only
        (["model-00001-of-00002.safetensors", "pytorch_model-00001-of-00002.bin"], True),
        (["config.json", "pytorch_model.bin"], False),  # the only weights there are
        (["2_Dense/model.safetensors", "pytorch_model.bin"], False),  # root weights exist only as .bin
    ],
)
def test_pytorch_weights_are_skipped_only_beside_safetensors(files: list[str], skips_bin: bool) -> None:
    from reranker_template.serve.download import DUPLICATE_WEIGHTS, IGNORE_PATTERNS, ignore_patterns

    assert ignore_patterns(files) == IGNORE_PATTERNS + (DUPLICATE_WEIGHTS if skips_bin else [])


def test_a_bin_copy_of_safetensors_weights_is_not_downloaded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(minilm_dir(), repo)
    (repo / "pytorch_model.bin").write_bytes((minilm_dir() / "model.safetensors").read_bytes())  # as big
    with FakeHub({REPO: repo}) as hub:
        result = run_fetch(hub_env(tmp_path, hub.url), REPO, deadline=30)
        assert result.returncode == 0, result.stdout + result.stderr
        path = Path(result.stdout.split("PATH=")[1].strip())
        assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
        assert not (path / "pytorch_model.bin").exists()
        assert not [r for r in hub.requests if "pytorch_model.bin" in r]
    offline = run_fetch(hub_env(tmp_path, hub.url), REPO, deadline=6, offline=True)
    assert offline.returncode == 0 and "using the cached copy" in offline.stdout, offline.stdout + offline.stderr
