"""PROVISIONING_SCRIPT: fetched from a real loopback HTTP server, run for real, markers on disk."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from support.loopback import LoopbackServer, Reply, Request

from reranker_template.cli import provision as cli_provision
from reranker_template.paths import Paths
from reranker_template.serve.provisioning import (
    COMPLETE_MARKER,
    FAILED_MARKER,
    RUNNING_MARKER,
    Download,
    execute,
    mark_pending,
    run_provisioning,
    wait_for_provisioning,
)
from reranker_template.settings import load_settings

pytestmark = pytest.mark.slow  # provisioning scripts run as processes, fetched from a loopback server

FAST = Download(retries=3, backoff_seconds=0.01, connect_timeout=2.0, read_timeout=10.0)


class ScriptServer:
    """Serves scripts by request target (path and query); `fail_first[target] = n` answers 503 to the first n
    requests for it. `requests` lists the targets asked for, in order."""

    def __init__(self) -> None:
        self.scripts: dict[str, bytes] = {}
        self.fail_first: dict[str, int] = {}
        self.http = LoopbackServer(self.answer)

    @property
    def requests(self) -> list[str]:
        return [request.target for request in self.http.requests]

    def answer(self, request: Request) -> Reply:
        if self.fail_first.get(request.target, 0) > 0:
            self.fail_first[request.target] -= 1
            return Reply(503)
        body = self.scripts.get(request.target)
        return Reply(body=body) if body is not None else Reply(404, b"not found")

    def url(self, path: str) -> str:
        return self.http.url + path

    def add(self, path: str, text: str) -> str:
        self.scripts[path] = text.encode()
        return self.url(path)


@pytest.fixture
def server() -> Iterator[ScriptServer]:
    s = ScriptServer()
    with s.http:
        yield s


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(state_dir=tmp_path / "state", log_dir=tmp_path / "logs", cache_dir=None, container=False)
    p.create()
    return p


def settings_for(script: str, **env: str):
    return load_settings({"PROVISIONING_SCRIPT": script, **env})


def counting_script(count_file: Path, extra: str = "") -> str:
    return f"#!/bin/sh\necho provisioning-ran >> '{count_file}'\necho hello from the script\n{extra}\n"


def runs(count_file: Path) -> int:
    return len(count_file.read_text().splitlines()) if count_file.exists() else 0


def test_runs_once_and_not_on_the_second_boot(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    count = tmp_path / "count"
    url = server.add("/setup.sh", counting_script(count))
    settings = settings_for(url)
    markers = paths.provisioning_marker_dir
    out = io.StringIO()

    first = run_provisioning(settings, paths, markers, download=FAST, echo=out)
    assert first.state == "succeeded" and first.may_start_vllm
    assert runs(count) == 1
    assert (markers / COMPLETE_MARKER).exists()
    assert not (markers / RUNNING_MARKER).exists()
    # Output reaches both the log (stdout here) and provisioning.log.
    assert "hello from the script" in out.getvalue()
    assert "hello from the script" in paths.log_file("provisioning").read_text()

    second = run_provisioning(settings, paths, markers, download=FAST, echo=io.StringIO())
    assert second.state == "already-done"
    assert runs(count) == 1
    assert server.requests == ["/setup.sh"]  # not even downloaded again
    assert wait_for_provisioning(markers, timeout=5).state == "complete"


def test_a_vast_style_empty_marker_counts_as_done(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    count = tmp_path / "count"
    url = server.add("/setup.sh", counting_script(count))
    (paths.state_dir / COMPLETE_MARKER).write_text("")
    result = run_provisioning(settings_for(url), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "already-done" and runs(count) == 0


def test_a_changed_script_runs_again(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    count = tmp_path / "count"
    first = server.add("/one.sh", counting_script(count))
    second = server.add("/two.sh", counting_script(count))
    run_provisioning(settings_for(first), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    result = run_provisioning(settings_for(second), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "succeeded" and runs(count) == 2


def test_failure_with_continue_lets_vllm_start_and_retries_next_boot(
    server: ScriptServer, paths: Paths, tmp_path: Path
) -> None:
    count = tmp_path / "count"
    url = server.add("/fails.sh", counting_script(count, "exit 3"))
    settings = settings_for(url)  # PROVISIONING_FAILURE defaults to continue
    out = io.StringIO()

    result = run_provisioning(settings, paths, paths.state_dir, download=FAST, echo=out)
    assert result.state == "failed" and result.exit_code == 3
    assert result.may_start_vllm
    assert (paths.state_dir / FAILED_MARKER).exists() and not (paths.state_dir / COMPLETE_MARKER).exists()
    assert "status 3" in out.getvalue() and "starts anyway" in out.getvalue()
    waited = wait_for_provisioning(paths.state_dir, timeout=5)
    assert waited.state == "failed" and waited.may_start_vllm and "status 3" in (waited.reason or "")

    # A failed script is tried again on the next boot (a flaky network should not stick).
    run_provisioning(settings, paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert runs(count) == 2


def test_failure_with_stop_keeps_vllm_down(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    url = server.add("/fails.sh", counting_script(tmp_path / "count", "exit 3"))
    settings = settings_for(url, PROVISIONING_FAILURE="stop")
    result = run_provisioning(settings, paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "failed" and not result.may_start_vllm
    waited = wait_for_provisioning(paths.state_dir, timeout=5)
    assert waited.state == "failed" and not waited.may_start_vllm
    assert "status 3" in (waited.reason or "")


def test_checksum_mismatch_is_refused(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    count = tmp_path / "count"
    text = counting_script(count)
    url = server.add("/setup.sh", text)
    wrong = hashlib.sha256(b"something else").hexdigest()
    out = io.StringIO()
    result = run_provisioning(
        settings_for(url, PROVISIONING_SHA256=wrong), paths, paths.state_dir, download=FAST, echo=out
    )
    assert result.state == "failed" and "PROVISIONING_SHA256" in (result.reason or "")
    assert runs(count) == 0  # never executed
    assert "PROVISIONING_SHA256 does not match" in out.getvalue()

    right = hashlib.sha256(text.encode()).hexdigest().upper()  # sha256sum output, any case
    result = run_provisioning(
        settings_for(url, PROVISIONING_SHA256=right), paths, paths.state_dir, download=FAST, echo=io.StringIO()
    )
    assert result.state == "succeeded" and runs(count) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_hanging_script_is_bounded_by_the_timeout(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    url = server.add("/hangs.sh", f"#!/bin/sh\nsleep 300 &\necho $! > '{child_pid}'\necho started\nwait\n")
    settings = settings_for(url, PROVISIONING_TIMEOUT="1")
    started = time.monotonic()
    result = run_provisioning(settings, paths, paths.state_dir, download=FAST, echo=io.StringIO())
    elapsed = time.monotonic() - started
    assert result.state == "failed" and "PROVISIONING_TIMEOUT" in (result.reason or "")
    assert elapsed < 15
    # The whole process group went, including what the script started in the background.
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert "started" in paths.log_file("provisioning").read_text()


def test_a_script_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.sh"
    script.write_text("trap '' TERM\necho ready\nwhile true; do sleep 0.1; done\n")
    log = io.StringIO()
    started = time.monotonic()
    code = execute(["bash", str(script)], cwd=tmp_path, timeout=0.5, log=log, echo=io.StringIO(), grace_seconds=0.5)
    assert code is None
    assert time.monotonic() - started < 10


def test_download_is_retried_on_server_errors(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    count = tmp_path / "count"
    url = server.add("/flaky.sh", counting_script(count))
    server.fail_first["/flaky.sh"] = 2
    result = run_provisioning(settings_for(url), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "succeeded" and runs(count) == 1
    assert server.requests == ["/flaky.sh"] * 3


def test_a_missing_script_fails_with_the_http_status(server: ScriptServer, paths: Paths) -> None:
    result = run_provisioning(
        settings_for(server.url("/nope.sh")), paths, paths.state_dir, download=FAST, echo=io.StringIO()
    )
    assert result.state == "failed" and "HTTP 404" in (result.reason or "")


def test_a_local_path_without_shebang_runs_with_bash(paths: Paths, tmp_path: Path) -> None:
    marker = tmp_path / "bash-ran"
    script = tmp_path / "local.sh"
    script.write_text(f"[[ -n \"$BASH_VERSION\" ]] && touch '{marker}'\n")  # [[ ]] is bash, not sh
    result = run_provisioning(settings_for(str(script)), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "succeeded" and marker.exists()


def test_other_schemes_are_refused(paths: Paths) -> None:
    result = run_provisioning(
        settings_for("ftp://example.invalid/x.sh"), paths, paths.state_dir, download=FAST, echo=io.StringIO()
    )
    assert result.state == "failed" and "http(s)" in (result.reason or "")


def test_nothing_configured_is_a_no_op(paths: Paths) -> None:
    result = run_provisioning(load_settings({}), paths, paths.state_dir, download=FAST, echo=io.StringIO())
    assert result.state == "not-configured" and result.may_start_vllm
    assert wait_for_provisioning(paths.state_dir, timeout=1).state == "none"


def test_launcher_waits_while_the_script_runs(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    release = tmp_path / "release"
    url = server.add("/slow.sh", f"#!/bin/sh\nwhile [ ! -e '{release}' ]; do sleep 0.05; done\n")
    settings = settings_for(url)
    # boot marks the run as pending before any service starts, so the launcher cannot miss it.
    assert mark_pending(settings, paths.state_dir)
    assert wait_for_provisioning(paths.state_dir, timeout=0.3).state == "timeout"

    results = []
    runner = threading.Thread(
        target=lambda: results.append(
            run_provisioning(settings, paths, paths.state_dir, download=FAST, echo=io.StringIO())
        )
    )
    runner.start()
    # Still running: the launcher keeps waiting.
    assert wait_for_provisioning(paths.state_dir, timeout=0.5).state == "timeout"
    release.touch()
    waited = wait_for_provisioning(paths.state_dir, timeout=30)
    runner.join(timeout=30)
    assert waited.state == "complete" and waited.may_start_vllm
    assert results[0].state == "succeeded"
    # Done: a later boot marks nothing pending.
    assert not mark_pending(settings, paths.state_dir)


def test_a_dead_provisioner_does_not_block_the_launcher(paths: Paths) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (paths.state_dir / RUNNING_MARKER).write_text(f'{{"pid": {gone.pid}}}')
    waited = wait_for_provisioning(paths.state_dir, timeout=5)
    assert waited.state == "failed" and waited.may_start_vllm


def test_marker_dir_is_root_in_the_container(paths: Paths) -> None:
    assert replace(paths, container=True).provisioning_marker_dir == Path("/")
    assert paths.provisioning_marker_dir == paths.state_dir


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reranker")
    cli_provision.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_status_follows_the_failure_policy(
    server: ScriptServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.add("/fails.sh", "#!/bin/sh\necho about to fail\nexit 7\n")
    monkeypatch.setenv("RERANKER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RERANKER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PROVISIONING_SCRIPT", url)
    monkeypatch.setenv("PROVISIONING_FAILURE", "stop")
    assert _cli(["provision", "--layout", "local"]) == 1
    assert "about to fail" in capsys.readouterr().out
    assert (tmp_path / "logs" / "provisioning.log").exists()
    assert _cli(["provision", "--layout", "local", "--status"]) == 0
    assert "may not start" in capsys.readouterr().out

    monkeypatch.setenv("PROVISIONING_FAILURE", "continue")
    assert _cli(["provision", "--layout", "local"]) == 0


# --- the documented examples in provisioning/, run as a user would run them -------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "provisioning"


def _run_example(name: str, paths: Paths, monkeypatch: pytest.MonkeyPatch, **env: str):
    for key in ("MODEL_NAME", "PRELOAD_MODELS", "HF_TOKEN", "PRIVATE_MODEL", "APT_PACKAGES", "PIP_PACKAGES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    result = run_provisioning(settings_for(str(EXAMPLES / name)), paths, paths.state_dir, download=FAST, echo=out)
    return result, out.getvalue()


def test_example_predownload_skips_a_local_model(paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, out = _run_example("predownload-model.sh", paths, monkeypatch, MODEL_NAME=str(tmp_path))
    assert result.state == "succeeded", out
    assert "local path: nothing to download" in out


def test_example_predownload_reaches_the_hub_client(
    paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline and not cached: the script gets as far as huggingface_hub, which says so, and fails.
    result, out = _run_example(
        "predownload-model.sh",
        paths,
        monkeypatch,
        MODEL_NAME=str(tmp_path),
        PRELOAD_MODELS="org/not-cached",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
    )
    assert result.state == "failed", out
    assert "downloading org/not-cached" in out and "LocalEntryNotFoundError" in out


def test_example_private_model_needs_hf_token(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    result, out = _run_example("private-model.sh", paths, monkeypatch, PRIVATE_MODEL="my-org/my-reranker")
    assert result.state == "failed" and "HF_TOKEN is not set" in out
    result, out = _run_example("private-model.sh", paths, monkeypatch)
    assert result.state == "failed" and "set PRIVATE_MODEL" in out


def test_example_install_packages_with_nothing_to_install(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    result, out = _run_example("install-packages.sh", paths, monkeypatch)
    assert result.state == "succeeded" and "nothing to install" in out


def test_a_boot_clears_the_running_marker_of_an_interrupted_boot(paths: Paths) -> None:
    # The container stopped mid-script last time; now no script is configured (or it already succeeded).
    (paths.state_dir / RUNNING_MARKER).write_text(f'{{"pid": {os.getpid()}}}')
    assert not mark_pending(load_settings({}), paths.state_dir)
    assert wait_for_provisioning(paths.state_dir, timeout=1).state == "none"


def test_a_secret_in_the_url_stays_out_of_logs_and_markers(server: ScriptServer, paths: Paths, tmp_path: Path) -> None:
    url = server.add("/s.sh?token=SECRET123", counting_script(tmp_path / "count")).replace(
        "http://", "http://user:PASSWORD9@"
    )
    out = io.StringIO()
    first = run_provisioning(settings_for(url), paths, paths.state_dir, download=FAST, echo=out)
    assert first.state == "succeeded"
    written = out.getvalue() + paths.log_file("provisioning").read_text()
    written += "".join(p.read_text() for p in paths.state_dir.glob(".provisioning*"))
    assert "SECRET123" not in written and "PASSWORD9" not in written
    assert "/s.sh?…" in written
    # The marker still recognises the same script (and only it) on the next boot.
    assert (
        run_provisioning(settings_for(url), paths, paths.state_dir, download=FAST, echo=io.StringIO()).state
        == "already-done"
    )
    other = url.replace("SECRET123", "OTHER")
    server.scripts["/s.sh?token=OTHER"] = b"#!/bin/sh\ntrue\n"
    assert (
        run_provisioning(settings_for(other), paths, paths.state_dir, download=FAST, echo=io.StringIO()).state
        == "succeeded"
    )
