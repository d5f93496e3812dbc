"""scripts/start_rerank.sh: start, status, stop leave no process behind; mistakes fail fast and clearly."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support.lint_tools import tool
from support.loopback import free_ports
from support.stack_runner import REPO, RERANKER, TEST_TOKEN, minilm_dir, processes_with_env

from reranker_template.client import RerankerClient

pytestmark = pytest.mark.slow  # runs the script (and shellcheck) as processes

SCRIPT = REPO / "scripts" / "start_rerank.sh"


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RERANKER_", "VLLM_", "HF_", "API_KEYS", "OPEN_BUTTON"))
    }
    gateway_port, vllm_port = free_ports(2)
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "RERANKER_STATE_DIR": str(tmp_path / "state"),
            "RERANKER_BIN": RERANKER,
            "MODEL_NAME": str(minilm_dir()),
            "SERVED_MODEL_NAME": "minilm",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "VLLM_PORT": str(vllm_port),
            "API_KEYS": TEST_TOKEN,
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run(command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)


def test_shellcheck_finds_nothing() -> None:
    result = subprocess.run([tool("shellcheck"), "--shell=sh", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_usage_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    env = script_env(tmp_path)
    usage = run("", env)
    assert usage.returncode == 2 and "start|stop|restart|status|tail" in usage.stderr
    status = run("status", env)
    assert status.returncode == 3 and "not running" in status.stdout
    stop = run("stop", env)
    assert stop.returncode == 0 and "not running" in stop.stdout


def test_a_settings_mistake_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    env = script_env(tmp_path, USE_ALL_GPUS="maybe")
    started = time.monotonic()
    result = run("start", env)
    assert result.returncode == 1
    assert "USE_ALL_GPUS='maybe' is not valid" in result.stderr and "exited at once" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "state" / "serve.pid").exists()


def test_a_stale_pid_file_does_not_count_as_running(tmp_path: Path) -> None:
    env = script_env(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "serve.pid").write_text("99999999\n")  # above any pid_max: no such process
    status = run("status", env)
    assert status.returncode == 3 and "not running" in status.stdout
    assert not (tmp_path / "state" / "serve.pid").exists()


@pytest.mark.vllm
def test_start_status_stop_lifecycle(tmp_path: Path, vllm_cache_root: Path) -> None:
    env = script_env(tmp_path, VLLM_CACHE_ROOT=str(vllm_cache_root))
    state = env["RERANKER_STATE_DIR"]
    started = run("start", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "started (pid" in started.stdout
        pid = int((tmp_path / "state" / "serve.pid").read_text())
        assert (tmp_path / "state" / "logs" / "serve.log").exists()

        again = run("start", env)
        assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout

        url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        RerankerClient(url, TEST_TOKEN).wait_until_ready(timeout=400)
        status = run("status", env)
        assert status.returncode == 0 and f"running (pid {pid})" in status.stdout and "ready" in status.stdout

        hits = (
            RerankerClient(url, TEST_TOKEN)
            .rerank("green tea benefits", ["basketball is a sport", "green tea has antioxidants"])
            .results
        )
        assert hits[0].index == 1

        tail = subprocess.Popen(["sh", str(SCRIPT), "tail"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert tail.stdout is not None
            first = tail.stdout.readline()
            assert first  # the log of `reranker serve`
        finally:
            tail.terminate()
            tail.wait(timeout=10)
    finally:
        stopped = run("stop", env, timeout=180)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (tmp_path / "state" / "serve.pid").exists()
    # Nothing of the stack is left: not the serve process, not supervisord, vLLM or the gateway.
    assert not alive(pid)
    assert processes_with_env("RERANKER_STATE_DIR", state) == []
    assert run("status", env).returncode == 3
