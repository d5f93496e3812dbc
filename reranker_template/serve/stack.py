"""`reranker serve` / `reranker boot`: plan, render supervisord's config, run it, stop everything.

The parent stays small: it validates settings and plans (so a mistake exits 2 with nothing started),
then runs supervisord in the foreground and forwards SIGTERM/SIGINT to it. It also reaps every child
that is re-parented to it (it is PID 1 in the container) and, when supervisord is gone, kills any
process of the stack still alive, so nothing is ever left behind.
"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reranker_template.errors import ConfigError, ModelUnavailable
from reranker_template.facts.machine import detect_hardware, find_runtime
from reranker_template.facts.model import inspect_model
from reranker_template.paths import Paths, container_paths, local_paths
from reranker_template.plan.build import make_plan
from reranker_template.plan.contract import Plan, write_plan
from reranker_template.serve.download import check_local_model
from reranker_template.serve.provisioning import mark_pending
from reranker_template.serve.sshd import prepare as prepare_sshd
from reranker_template.serve.status import Phase, VllmStatus, write_status
from reranker_template.serve.supervisor import VLLM_STOP_WAIT_SECONDS, SupervisorConfig, render
from reranker_template.settings import Settings, load_settings

STACK_ID_VAR = "RERANKER_STACK_ID"
# supervisord stops programs one after another: vLLM's bounded stop, the gateway's, and a margin.
SHUTDOWN_TIMEOUT_SECONDS = VLLM_STOP_WAIT_SECONDS + 20


@dataclass(frozen=True)
class StackSpec:
    settings: Settings
    paths: Paths
    plan: Plan


def build_plan(settings: Settings, env: Mapping[str, str]) -> Plan:
    """Plan the stack without starting anything (also what `reranker plan` prints)."""
    if settings.model_is_local_path:
        try:
            check_local_model(settings.model_name)
        except ModelUnavailable as exc:
            raise ConfigError(
                "MODEL_NAME",
                settings.model_name,
                "an existing model directory with config.json, or a Hugging Face id like BAAI/bge-reranker-v2-m3",
            ) from exc
    hardware = detect_hardware(env, settings.gpu_count_hint)
    model = inspect_model(settings.model_name, is_local=settings.model_is_local_path, token=settings.hf_token, env=env)
    return make_plan(settings, hardware, model, find_runtime())


def prepare(container: bool, env: Mapping[str, str] | None = None) -> StackSpec:
    env = dict(os.environ if env is None else env)
    settings = load_settings(env)
    paths = container_paths(env) if container else local_paths(env)
    if container and paths.cache_dir is not None:
        # Caches on the persistent volume: a restarted instance neither downloads nor compiles again.
        os.environ.setdefault("HF_HOME", str(paths.cache_dir / "huggingface"))
        os.environ.setdefault("VLLM_CACHE_ROOT", str(paths.cache_dir / "vllm"))
        env = dict(os.environ)
    plan = build_plan(settings, env)
    return StackSpec(settings=settings, paths=paths, plan=plan)


def write_runtime_files(spec: StackSpec) -> Path:
    """plan.json, a fresh status file, supervisord.conf. Returns the config's path."""
    paths = spec.paths
    paths.create()
    write_plan(paths.plan_file, spec.plan)
    write_status(paths.vllm_status_file, VllmStatus().moved_to(Phase.STARTING))
    # Before supervisord starts, so the launcher cannot look for the marker before the script runs.
    mark_pending(spec.settings, paths.provisioning_marker_dir)
    config = SupervisorConfig(
        python=sys.executable,
        paths=paths,
        provisioning=bool(spec.settings.provisioning_script),
        include_dir="/etc/supervisor/conf.d" if paths.container and Path("/etc/supervisor/conf.d").is_dir() else None,
        sshd=prepare_sshd(spec.settings, paths),  # None unless SSH_PUBLIC_KEY is set and sshd exists
    )
    paths.supervisor_conf.write_text(render(config))
    if paths.container and "RERANKER_STATE_DIR" not in os.environ:
        _link_default_supervisor_conf(paths.supervisor_conf)
    return paths.supervisor_conf


def _link_default_supervisor_conf(conf: Path) -> None:
    """So that a plain `supervisorctl status` in the container finds our supervisord."""
    link = Path("/etc/supervisord.conf")
    try:
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(conf)
    except OSError:
        pass


def print_banner(spec: StackSpec) -> None:
    plan = spec.plan
    print(
        f"[reranker] model {plan.model} as {plan.served_model_name!r}, preset {plan.preset or 'none'}, device {plan.device}",
        flush=True,
    )
    print(
        f"[reranker] vLLM on 127.0.0.1:{plan.vllm_port}, gateway on {spec.settings.gateway_host}:{plan.gateway_port}",
        flush=True,
    )
    print(f"[reranker] logs in {spec.paths.log_dir}, state in {spec.paths.state_dir}", flush=True)
    print(f"[reranker] supervisorctl -c {spec.paths.supervisor_conf} status   # see the services", flush=True)


class StackRunner:
    """Runs supervisord as our child and makes sure that stopping leaves no process behind."""

    def __init__(self, spec: StackSpec, conf: Path) -> None:
        self.spec = spec
        self.conf = conf
        self.stack_id = uuid.uuid4().hex
        self.supervisord_pid: int | None = None
        self.stop_requested_at: float | None = None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                STACK_ID_VAR: self.stack_id,
                "RERANKER_STATE_DIR": str(self.spec.paths.state_dir),
                "RERANKER_LOG_DIR": str(self.spec.paths.log_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.supervisord_pid is None:
            return
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            print(
                f"[reranker] {signal.Signals(signum).name}: stopping every service (at most {SHUTDOWN_TIMEOUT_SECONDS} s)",
                flush=True,
            )
            _signal(self.supervisord_pid, signal.SIGTERM)
        else:
            print("[reranker] second signal: killing every service now", flush=True)
            _signal(self.supervisord_pid, signal.SIGKILL)

    def run(self) -> int:
        argv = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)]
        append_stdout_if_file()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.supervisord_pid = os.spawnve(os.P_NOWAIT, argv[0], argv, self.child_env())
        code = self.wait_for_supervisord()
        killed = kill_stack_processes(self.stack_id)
        if killed:
            print(f"[reranker] killed {killed} leftover process(es) of the stack", flush=True)
        return code

    def wait_for_supervisord(self) -> int:
        """Reap every child (we may be PID 1) until supervisord exits; enforce the shutdown bound."""
        assert self.supervisord_pid is not None
        while True:
            if (
                self.stop_requested_at is not None
                and time.monotonic() - self.stop_requested_at > SHUTDOWN_TIMEOUT_SECONDS
            ):
                print("[reranker] services did not stop in time: killing them", flush=True)
                _signal(self.supervisord_pid, signal.SIGKILL)
                self.stop_requested_at = time.monotonic()
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                time.sleep(0.2)
                continue
            if pid == self.supervisord_pid:
                return os.waitstatus_to_exitcode(status) if self.stop_requested_at is None else 0


def append_stdout_if_file() -> None:
    """supervisord reopens /dev/stdout for each program: with stdout redirected to a file (not a pipe),
    each reopening has its own offset and the services overwrite each other's lines. In append mode every
    writer writes at the end."""
    try:
        if stat.S_ISREG(os.fstat(1).st_mode):
            fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_APPEND)
    except OSError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_stack_processes(stack_id: str) -> int:
    """SIGKILL any process that carries our stack id in its environment (children of children too)."""
    marker = f"{STACK_ID_VAR}={stack_id}".encode()
    me = os.getpid()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            _signal(int(entry.name), signal.SIGKILL)
            killed += 1
    return killed


def run(container: bool) -> int:
    spec = prepare(container)
    conf = write_runtime_files(spec)
    print_banner(spec)
    return StackRunner(spec, conf).run()
