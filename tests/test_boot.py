"""`reranker boot`, the container entrypoint: container paths, and PID 1 duties (signals, reaping, cleanup)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.stack_runner import RERANKER, http_get, processes_with_env, stack_env

from reranker_template.paths import container_paths
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
            try:
                health = json.loads(http_get(gateway, timeout=2)[1])
            except (OSError, ValueError):
                pass
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
