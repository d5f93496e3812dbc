"""`reranker boot`, the container entrypoint: container paths, and PID 1 duties (signals, reaping, cleanup)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.stack_runner import RERANKER, http_get, minilm_dir, processes_with_env, stack_env

from reranker_template.paths import container_paths
from reranker_template.serve import processes, stack
from reranker_template.serve.supervisor import SupervisorConfig, render


def test_container_paths_use_workspace_and_portal_logs(tmp_path: Path) -> None:
    paths = container_paths({}, workspace=tmp_path)
    assert paths.state_dir == tmp_path / "reranker"
    assert paths.log_file("vllm") == Path("/var/log/portal/vllm.log")
    assert paths.cache_dir == tmp_path / ".cache"
    assert paths.provisioning_marker_dir == Path("/")
    without_workspace = container_paths({}, workspace=tmp_path / "absent")
    assert without_workspace.cache_dir is None and without_workspace.state_dir == Path("/var/lib/reranker")


def test_rendered_supervisor_config(tmp_path: Path) -> None:
    paths = container_paths(
        {"RERANKER_STATE_DIR": str(tmp_path / "s"), "RERANKER_LOG_DIR": str(tmp_path / "l")}, workspace=tmp_path
    )
    text = render(SupervisorConfig(python="/py", paths=paths, provisioning=True, include_dir="/etc/supervisor/conf.d"))
    assert "[program:vllm]" in text and "[program:gateway]" in text and "[program:provisioning]" in text
    assert "command=/py -m reranker_template.serve.launcher" in text
    assert "provision --layout container" in text
    assert "stopasgroup=true" in text and "killasgroup=true" in text
    assert "files = /etc/supervisor/conf.d/*.conf" in text
    assert "${" not in text
    plain = render(SupervisorConfig(python="/py", paths=paths))
    assert "[program:provisioning]" not in plain and "[include]" not in plain


def given_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for `stack.prepare` that differs from this process's: a local model, no network."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "MODEL_NAME": str(minilm_dir()),
        "SERVED_MODEL_NAME": "from-the-given-env",
        "HF_HUB_OFFLINE": "1",
        "RERANKER_STATE_DIR": str(tmp_path / "state"),
        "RERANKER_LOG_DIR": str(tmp_path / "logs"),
        **extra,
    }


def test_the_stack_plans_and_runs_with_the_env_it_is_given(tmp_path: Path) -> None:
    """What `prepare` was given is what the plan and every program of the stack see, not os.environ."""
    assert "SERVED_MODEL_NAME" not in os.environ
    spec = stack.prepare(container=True, env=given_env(tmp_path, TEST_ONLY_VARIABLE="kept"))
    assert spec.plan.served_model_name == "from-the-given-env"
    child = stack.StackRunner(spec, tmp_path / "supervisord.conf").child_env()
    assert child["SERVED_MODEL_NAME"] == "from-the-given-env" and child["TEST_ONLY_VARIABLE"] == "kept"
    assert child["PATH"] == "/usr/bin:/bin"


def test_container_caches_go_to_the_workspace_without_touching_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    before = dict(os.environ)
    given = given_env(tmp_path, VLLM_CACHE_ROOT=str(tmp_path / "my-vllm-cache"))
    spec = stack.prepare(container=True, env=given, workspace=tmp_path)
    assert dict(os.environ) == before
    assert spec.env["HF_HOME"] == str(tmp_path / ".cache" / "huggingface")  # on the persistent volume
    assert spec.env["VLLM_CACHE_ROOT"] == str(tmp_path / "my-vllm-cache")  # a variable already set wins
    assert "HF_HOME" not in given  # the caller's mapping is not changed either
    local = stack.prepare(container=False, env=given)
    assert "HF_HOME" not in local.env  # `reranker serve`: the libraries' own defaults


def test_blank_cache_locations_mean_the_defaults(tmp_path: Path) -> None:
    """A template's `-e HF_HOME= -e XDG_CACHE_HOME=`: vLLM and the hub would cache in the current directory."""
    blank = {"HF_HOME": "", "XDG_CACHE_HOME": " ", "VLLM_CACHE_ROOT": ""}
    spec = stack.prepare(container=True, env=given_env(tmp_path, **blank), workspace=tmp_path)
    assert spec.env["HF_HOME"] == str(tmp_path / ".cache" / "huggingface")
    assert spec.env["VLLM_CACHE_ROOT"] == str(tmp_path / ".cache" / "vllm") and "XDG_CACHE_HOME" not in spec.env
    local = stack.prepare(container=False, env=given_env(tmp_path, **blank))
    assert not set(blank) & set(local.env)


@pytest.mark.slow
def test_kill_stack_processes_ends_the_stacks_processes_and_no_other() -> None:
    """Found by the stack id in their environment, also a grandchild that left the process tree."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    spawner = f"import subprocess, time; subprocess.Popen({sleeper!r}, start_new_session=True); time.sleep(60)"
    ours = subprocess.Popen([sys.executable, "-c", spawner], env={**os.environ, processes.STACK_ID_VAR: "ours"})
    other = subprocess.Popen(sleeper, env={**os.environ, processes.STACK_ID_VAR: "other"})
    try:
        deadline = time.monotonic() + 30
        while len(processes.processes_with_env(processes.STACK_ID_VAR, "ours")) < 2:
            assert time.monotonic() < deadline, "the grandchild did not start"
            time.sleep(0.1)
        assert processes.kill_stack_processes("ours") == 2
        assert ours.wait(timeout=10) == -signal.SIGKILL
        while processes.processes_with_env(processes.STACK_ID_VAR, "ours"):
            assert time.monotonic() < deadline, "the grandchild survived"
            time.sleep(0.1)
        assert other.poll() is None
    finally:
        ours.kill()
        other.kill()
        ours.wait()
        other.wait()


@pytest.mark.slow
def test_the_launcher_ends_its_process_group_but_not_itself() -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "from reranker_template.serve.processes import signal_group_except_self\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
        "time.sleep(0.5)\n"
        "signal_group_except_self(signal.SIGKILL)\n"
        "print(*[kid.wait(timeout=10) for kid in kids])\n"
    )
    # In its own session: the test's own process group is not touched.
    result = subprocess.run(
        [sys.executable, "-c", code], start_new_session=True, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(-signal.SIGKILL)] * 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_boot_as_pid_1_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """In its own PID namespace `reranker boot` is PID 1, as in a container."""
    probe = subprocess.run(["unshare", "-fp", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a PID namespace here: " + probe.stderr.decode()[:200])
    # A model that fails preflight at once keeps this test fast: gateway and supervisord still run.
    env = stack_env(tmp_path, "nobody/not-cached-anywhere", "x", {"RERANKER_LOG_DIR": str(tmp_path / "portal")})
    output = (tmp_path / "boot.log").open("wb")
    process = subprocess.Popen(
        ["unshare", "-fp", "--mount-proc", "--kill-child", RERANKER, "boot"],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}/health"
    try:
        deadline = time.monotonic() + 120
        health: dict = {}
        while time.monotonic() < deadline and health.get("status") != "failed":
            time.sleep(0.5)
            with contextlib.suppress(OSError, ValueError):  # not up yet
                health = json.loads(http_get(gateway, timeout=2)[1])
        assert health.get("status") == "failed", (tmp_path / "boot.log").read_text()[-2000:]
        assert (tmp_path / "portal" / "gateway.log").exists()
        assert processes_with_env("RERANKER_STATE_DIR", env["RERANKER_STATE_DIR"])
    finally:
        # As `docker stop` does: SIGTERM to the namespace's PID 1 (unshare's child), from outside.
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)
        process.wait(timeout=90)
    deadline = time.monotonic() + 60
    while processes_with_env("RERANKER_STATE_DIR", env["RERANKER_STATE_DIR"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with_env("RERANKER_STATE_DIR", env["RERANKER_STATE_DIR"]) == []
    assert "stopping every service" in (tmp_path / "boot.log").read_text()
