"""PROVISIONING_SCRIPT, the Vast convention: fetch a user's script and run it once before vLLM starts.

A user customises the stock image without building one: the script pre-downloads a model, installs a
package, fetches a private model with HF_TOKEN. Markers in `marker_dir` (`/` in the container, as on
Vast; the state directory for `reranker serve`) record what happened, so a restart does not run it again:

    .provisioning            while it runs (the vLLM launcher waits while this exists)
    .provisioning_complete   it succeeded: later boots skip it
    .provisioning_failed     it failed (a later boot tries again); says why, and the failure policy

PROVISIONING_FAILURE=continue (the default, as on Vast) lets vLLM start after a failure; `stop` keeps
vLLM down and the gateway's /health says why. PROVISIONING_SHA256 refuses a script whose checksum
differs; PROVISIONING_TIMEOUT bounds a script that hangs (its whole process group is killed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from reranker_template.errors import ProvisioningError
from reranker_template.fileio import read_json_object, write_json
from reranker_template.paths import Paths
from reranker_template.serve.processes import terminate_group
from reranker_template.settings import ProvisioningFailure, Settings

RUNNING_MARKER = ".provisioning"
COMPLETE_MARKER = ".provisioning_complete"
FAILED_MARKER = ".provisioning_failed"
LOG_NAME = "provisioning"
# After SIGTERM on a timeout, the script's process group gets this long before SIGKILL.
KILL_GRACE_SECONDS = 5.0
# Markers hold no secret (the source is redacted) and other tooling on the instance may read them.
MARKER_MODE = 0o644


class RunState(StrEnum):
    """What `run_provisioning` did."""

    NOT_CONFIGURED = "not-configured"  # no PROVISIONING_SCRIPT
    ALREADY_DONE = "already-done"  # this script succeeded on an earlier boot
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WaitState(StrEnum):
    """What the markers say once `wait_for_provisioning` stops waiting."""

    NONE = "none"  # nothing ran here (no script, or no marker yet)
    COMPLETE = "complete"
    FAILED = "failed"
    TIMEOUT = "timeout"  # still running after the launcher's deadline


@dataclass(frozen=True)
class ProvisioningResult:
    """What `run_provisioning` did. `may_start_vllm` is what the stack acts on."""

    state: RunState
    source: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    policy: ProvisioningFailure = ProvisioningFailure.CONTINUE
    seconds: float = 0.0
    log_file: str | None = None

    @property
    def may_start_vllm(self) -> bool:
        return self.state != RunState.FAILED or self.policy == ProvisioningFailure.CONTINUE


@dataclass(frozen=True)
class ProvisioningWait:
    """What `wait_for_provisioning` saw. `may_start_vllm` False: keep vLLM down and report `reason`."""

    state: WaitState
    may_start_vllm: bool
    reason: str | None = None


@dataclass(frozen=True)
class Download:
    """How the script is fetched: a few retries with backoff ride out a flaky host or a 5xx."""

    retries: int = 5
    backoff_seconds: float = 1.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


# --- markers -------------------------------------------------------------------------------------


def _read_marker(path: Path) -> dict[str, Any] | None:
    """A marker's JSON, None when there is none; an empty or foreign marker (other tooling's) reads as {}."""
    if not path.exists():
        return None
    return read_json_object(path) or {}


def _write_marker(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data, mode=MARKER_MODE)


def already_done(settings: Settings, marker_dir: Path) -> bool:
    """True when this script already succeeded here. A marker naming another script does not count,
    so changing PROVISIONING_SCRIPT on a kept state directory runs the new one."""
    data = _read_marker(marker_dir / COMPLETE_MARKER)
    if data is None:
        return False
    recorded = data.get("source_id")
    return recorded is None or recorded == source_id(settings.provisioning_script or "")


def mark_pending(settings: Settings, marker_dir: Path) -> bool:
    """Create the running marker before any service starts, so the vLLM launcher cannot miss a
    provisioning run that has not begun yet. Returns True when a run is pending.

    Call it once per boot, before supervisord starts: it also clears a running marker left by a boot
    that was interrupted mid-script, which would otherwise hold vLLM back."""
    if not settings.provisioning_script or already_done(settings, marker_dir):
        (marker_dir / RUNNING_MARKER).unlink(missing_ok=True)
        return False
    marker_dir.mkdir(parents=True, exist_ok=True)
    (marker_dir / FAILED_MARKER).unlink(missing_ok=True)
    _write_marker(
        marker_dir / RUNNING_MARKER,
        {"source": redact(settings.provisioning_script), "pid": None, "started": time.time()},
    )
    return True


# --- fetching ------------------------------------------------------------------------------------


def redact(source: str) -> str:
    """The source as logs and markers show it: a URL can carry a secret (user:password@, ?token=)."""
    parts = urlparse(source)
    if not parts.scheme or not parts.netloc:
        return source
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host, query="…" if parts.query else "", fragment="").geturl()


def source_id(source: str) -> str:
    """What the complete marker records to recognise the same script later, without storing a secret."""
    return hashlib.sha256(source.encode()).hexdigest()


def fetch_script(source: str, download: Download = Download()) -> bytes:
    """The script's bytes, from an http(s) URL (with retries) or a local path."""
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        return _download(source, download)
    if scheme == "file":
        source = urlparse(source).path
    elif scheme and len(scheme) > 1:  # "C:" style drive letters aside, any other scheme is a mistake
        raise ProvisioningError(
            f"PROVISIONING_SCRIPT={redact(source)!r}: only http(s) URLs and local file paths are supported"
        )
    path = Path(source).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"PROVISIONING_SCRIPT={source!r}: cannot read the file ({exc.strerror})") from None


def _download(url: str, download: Download) -> bytes:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=download.retries,
        backoff_factor=download.backoff_seconds,
        status_forcelist=(408, 425, 429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            response = session.get(url, timeout=(download.connect_timeout, download.read_timeout))
        except requests.RequestException as exc:
            raise ProvisioningError(
                f"could not download PROVISIONING_SCRIPT {redact(url)} after {download.retries} retries: "
                f"{type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise ProvisioningError(
                f"could not download PROVISIONING_SCRIPT {redact(url)}: HTTP {response.status_code}"
            )
        return response.content


def check_sha256(content: bytes, expected: str | None) -> str:
    """The content's sha256; raises when PROVISIONING_SHA256 is set and differs."""
    actual = hashlib.sha256(content).hexdigest()
    if expected is not None and actual != expected.lower():
        raise ProvisioningError(
            f"PROVISIONING_SHA256 does not match the script: expected {expected}, got {actual}; the script was not run"
        )
    return actual


# --- running -------------------------------------------------------------------------------------


def script_command(script: Path, content: bytes) -> list[str]:
    """Run a script with a `#!` line as itself; anything else with bash (or sh), as Vast does."""
    if content.startswith(b"#!"):
        return [str(script)]
    shell = shutil.which("bash") or "/bin/sh"
    return [shell, str(script)]


def _tee(stream: TextIO, sinks: list[TextIO]) -> None:
    for line in iter(stream.readline, ""):
        for sink in sinks:
            try:
                sink.write(line)
                sink.flush()
            except (OSError, ValueError):  # a closed sink must not stop the others
                pass


def script_env(base: Mapping[str, str]) -> dict[str, str]:
    """The script's environment: ours, with our Python's directory first on PATH, so `python3` in a
    script is the interpreter that has vLLM and this package (the venv's, under `reranker serve`)."""
    env = dict(base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def execute(
    command: list[str],
    *,
    cwd: Path,
    timeout: float,
    log: TextIO,
    echo: TextIO,
    env: Mapping[str, str] | None = None,
    grace_seconds: float = KILL_GRACE_SECONDS,
) -> int | None:
    """Run `command` in its own process group, copying its output to `echo` and `log`.
    Returns its exit status, or None when it ran past `timeout` and was killed."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=_tee, args=(process.stdout, [echo, log]), daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_group(process, grace_seconds)
        code = None
    # A background process the script left running may keep the pipe open: do not wait on it for long.
    reader.join(timeout=2.0)
    return code


def _say(message: str, sinks: list[TextIO]) -> None:
    for sink in sinks:
        try:
            sink.write(f"[provisioning] {message}\n")
            sink.flush()
        except (OSError, ValueError):
            pass


def run_provisioning(
    settings: Settings,
    paths: Paths,
    marker_dir: Path,
    *,
    download: Download = Download(),
    echo: TextIO | None = None,
) -> ProvisioningResult:
    """Fetch and run PROVISIONING_SCRIPT once; markers in `marker_dir` make later calls a no-op.

    Never raises for a bad script: the result (and the markers) say what happened, and
    `result.may_start_vllm` applies PROVISIONING_FAILURE.
    """
    echo = echo or sys.stdout
    policy = settings.provisioning_failure
    if not settings.provisioning_script:
        return ProvisioningResult(RunState.NOT_CONFIGURED, policy=policy)
    source = redact(settings.provisioning_script)
    if already_done(settings, marker_dir):
        # A pending marker from mark_pending must not hold vLLM back.
        (marker_dir / RUNNING_MARKER).unlink(missing_ok=True)
        _say(f"already done on an earlier boot ({marker_dir / COMPLETE_MARKER} exists); not running it again", [echo])
        return ProvisioningResult(RunState.ALREADY_DONE, source=source, policy=policy)

    marker_dir.mkdir(parents=True, exist_ok=True)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = paths.log_file(LOG_NAME)
    (marker_dir / FAILED_MARKER).unlink(missing_ok=True)
    _write_marker(marker_dir / RUNNING_MARKER, {"source": source, "pid": os.getpid(), "started": time.time()})
    started = time.monotonic()
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        sinks: list[TextIO] = [echo, log]
        exit_code: int | None = None
        try:
            exit_code = _fetch_and_run(settings, paths, download, log, sinks)
            problem = _exit_problem(exit_code, settings.provisioning_timeout)
        except (ProvisioningError, OSError) as exc:
            problem = str(exc) if isinstance(exc, ProvisioningError) else f"could not run the script: {exc}"
        seconds = time.monotonic() - started
        if problem is None:
            result = ProvisioningResult(RunState.SUCCEEDED, source, None, 0, policy, seconds, str(log_path))
            return _finish(result, settings, marker_dir / COMPLETE_MARKER, sinks)
        result = ProvisioningResult(RunState.FAILED, source, problem, exit_code, policy, seconds, str(log_path))
        return _finish(result, settings, marker_dir / FAILED_MARKER, sinks)


def _fetch_and_run(
    settings: Settings, paths: Paths, download: Download, log: TextIO, sinks: list[TextIO]
) -> int | None:
    """Fetch the script, check its checksum, run it; its exit status (None: killed at the timeout)."""
    assert settings.provisioning_script
    _say(f"fetching {redact(settings.provisioning_script)}", sinks)
    content = fetch_script(settings.provisioning_script, download)
    digest = check_sha256(content, settings.provisioning_sha256)
    work_dir = paths.state_dir / "provisioning"
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    script = work_dir / "script"
    script.write_bytes(content)
    script.chmod(0o700)
    cwd = paths.cache_dir.parent if paths.cache_dir is not None else paths.state_dir
    _say(
        f"running it (sha256 {digest}, timeout {settings.provisioning_timeout:g} s, output also in {log.name})",
        sinks,
    )
    return execute(
        script_command(script, content),
        cwd=cwd,
        timeout=settings.provisioning_timeout,
        log=log,
        echo=sinks[0],
        env=script_env(os.environ),
    )


def _exit_problem(exit_code: int | None, timeout: float) -> str | None:
    if exit_code is None:
        return f"the script ran longer than PROVISIONING_TIMEOUT={timeout:g} s and was stopped"
    if exit_code != 0:
        return f"the script exited with status {exit_code}"
    return None


def _finish(result: ProvisioningResult, settings: Settings, marker: Path, sinks: list[TextIO]) -> ProvisioningResult:
    """Record `result` in `marker` (with the script's identity), end the running marker, say how it went."""
    identity = {"source_id": source_id(settings.provisioning_script or "")}
    _write_marker(marker, asdict(result) | identity)
    marker.with_name(RUNNING_MARKER).unlink(missing_ok=True)
    if result.state is RunState.SUCCEEDED:
        _say(f"done in {result.seconds:.1f} s; {marker} stops later boots from running it again", sinks)
    else:
        then = (
            "vLLM starts anyway (PROVISIONING_FAILURE=continue)"
            if result.may_start_vllm
            else "vLLM will not start (PROVISIONING_FAILURE=stop)"
        )
        _say(f"FAILED: {result.reason}; {then}", sinks)
    return result


# --- waiting (the vLLM launcher) ---------------------------------------------------------------


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: trust the marker
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def provisioning_state(marker_dir: Path) -> ProvisioningWait | None:
    """The outcome the markers record now, or None while provisioning is still running."""
    running = _read_marker(marker_dir / RUNNING_MARKER)
    if running is not None:
        if _pid_alive(running.get("pid")):
            return None
        return ProvisioningWait(WaitState.FAILED, True, "the provisioning process died before it finished")
    failed = _read_marker(marker_dir / FAILED_MARKER)
    if failed is not None:
        policy = failed.get("policy", "continue")
        reason = f"PROVISIONING_SCRIPT failed: {failed.get('reason') or 'see provisioning.log'}"
        return ProvisioningWait(WaitState.FAILED, policy != ProvisioningFailure.STOP, reason)
    if (marker_dir / COMPLETE_MARKER).exists():
        return ProvisioningWait(WaitState.COMPLETE, True)
    return ProvisioningWait(WaitState.NONE, True)


def wait_for_provisioning(marker_dir: Path, timeout: float | None, *, poll_seconds: float = 0.2) -> ProvisioningWait:
    """Block while `.provisioning` exists (the script runs), then say whether vLLM may start.

    `timeout` None waits as long as it takes (the script itself is bounded by PROVISIONING_TIMEOUT);
    on a timeout vLLM may start: a stuck provisioner must not keep a working model down forever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = provisioning_state(marker_dir)
        if state is not None:
            return state
        if deadline is not None and time.monotonic() >= deadline:
            return ProvisioningWait(
                WaitState.TIMEOUT, True, f"provisioning still running after {timeout:g} s; starting vLLM anyway"
            )
        time.sleep(poll_seconds)
