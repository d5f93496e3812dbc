"""`reranker serve` / `reranker boot`: plan, render supervisord's config, run it, stop everything.

The parent stays small: it validates settings and plans (so a mistake exits 2 with nothing started),
then runs supervisord in the foreground and forwards SIGTERM/SIGINT to it. It also reaps every child
that is re-parented to it (it is PID 1 in the container) and, when supervisord is gone, kills any
process of the stack still alive, so nothing is ever left behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from reranker_template.errors import ConfigError, ModelUnavailable
from reranker_template.facts.machine import detect_hardware, find_runtime
from reranker_template.facts.model import inspect_model
from reranker_template.paths import WORKSPACE, Paths, container_paths, local_paths
from reranker_template.plan.build import make_plan
from reranker_template.plan.contract import Plan, write_plan
from reranker_template.plan.user_args import UserArgs
from reranker_template.serve.baked import find_baked
from reranker_template.serve.bundled_model import ensure_built
from reranker_template.serve.download import check_local_model
from reranker_template.serve.processes import STACK_ID_VAR, kill_stack_processes, send_signal, setup_logging
from reranker_template.serve.provisioning import mark_pending
from reranker_template.serve.sshd import prepare as prepare_sshd
from reranker_template.serve.status import Phase, VllmStatus, write_status
from reranker_template.serve.supervisor import (
    VLLM_STOP_WAIT_SECONDS,
    SupervisorConfig,
    render,
    wake_supervisord,
    worker_python,
)
from reranker_template.settings import Settings, load_settings

log = logging.getLogger("reranker.stack")
# supervisord stops programs one after another: vLLM's bounded stop, the gateway's, and a margin.
SHUTDOWN_TIMEOUT_SECONDS = VLLM_STOP_WAIT_SECONDS + 20


# Cache locations a template may carry blank (`-e HF_HOME=`): Hugging Face, vLLM and Triton would read "" as
# the current directory (vLLM's cache ended up in ./vllm), so blank means unset and the default applies.
BLANK_MEANS_UNSET = frozenset({"HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"})


@dataclass(frozen=True)
class StackSpec:
    settings: Settings
    paths: Paths
    plan: Plan
    env: dict[str, str]  # the environment the stack plans with and its programs inherit


def build_plan(settings: Settings, env: Mapping[str, str], models_dir: Path) -> Plan:
    """Plan the stack without starting anything (also what `reranker plan` prints); `models_dir` is where the
    stack keeps models it writes (`Paths.models_dir`)."""
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
    return make_plan(settings, hardware, model, find_runtime(), models_dir)


def prepare(container: bool, env: Mapping[str, str] | None = None, *, workspace: Path = WORKSPACE) -> StackSpec:
    """Settings, paths and plan for a stack run with `env` (default: this process's environment).

    `env` is read, never changed, and neither is os.environ (a blank cache location, BLANK_MEANS_UNSET, is
    left out): the cache locations the paths decide
    (`Paths.cache_env`) are added to a copy, in which a variable already set wins, and that copy is what
    the plan sees and what every program of the stack inherits (`StackSpec.env`). When the default model
    is the bundled cross-encoder (`settings.default_model`), it is built (once) first, and the copy's
    MODEL_NAME names its directory, so every program serves that directory; a model baked into the image
    (serve/baked.py) is served from its directory the same way.
    """
    given = {
        name: value
        for name, value in (os.environ if env is None else env).items()
        if name not in BLANK_MEANS_UNSET or value.strip()
    }
    paths = container_paths(given, workspace) if container else local_paths(given)
    stack_env = {**paths.cache_env(), **given}
    settings = load_settings(stack_env, local=not container)
    revision = UserArgs(settings.vllm_args).value("--revision")
    baked = find_baked(settings.model_name, revision, paths.baked_dir)
    if baked is not None:
        log.info("%s", baked.reason())
        return _serving_directory(settings, paths, stack_env, baked.path, baked.reason())
    if not settings.model_bundled:
        return StackSpec(
            settings=settings, paths=paths, plan=build_plan(settings, stack_env, paths.models_dir), env=stack_env
        )
    bundled = ensure_built(paths.models_dir)
    log.info("%s", bundled.log_line())
    return _serving_directory(settings, paths, stack_env, bundled.path, bundled.reason())


def _serving_directory(settings: Settings, paths: Paths, env: dict[str, str], directory: Path, why: str) -> StackSpec:
    """The spec for serving the model from `directory` (bundled or baked) under the name clients know."""
    env.update(MODEL_NAME=str(directory), SERVED_MODEL_NAME=settings.served_model_name)
    settings = load_settings(env)
    plan = build_plan(settings, env, paths.models_dir)
    return StackSpec(settings=settings, paths=paths, plan=replace(plan, reasons=(why, *plan.reasons)), env=env)


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
        sshd=prepare_sshd(spec.settings, paths, env=spec.env),  # None unless SSH_PUBLIC_KEY is set and sshd exists
        worker_python=worker_python(spec.env, sys.executable) if spec.settings.serverless else None,
    )
    paths.supervisor_conf.write_text(render(config))
    if paths.container and "RERANKER_STATE_DIR" not in spec.env:
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


def log_banner(spec: StackSpec) -> None:
    plan = spec.plan
    log.info(
        "model %s as %r, preset %s, device %s", plan.model, plan.served_model_name, plan.preset or "none", plan.device
    )
    log.info("vLLM on 127.0.0.1:%s, gateway on %s:%s", plan.vllm_port, spec.settings.gateway_host, plan.gateway_port)
    log.info("logs in %s, state in %s", spec.paths.log_dir, spec.paths.state_dir)
    log.info("supervisorctl -c %s status   # see the services", spec.paths.supervisor_conf)


class StackRunner:
    """Runs supervisord as our child and makes sure that stopping leaves no process behind."""

    def __init__(self, spec: StackSpec, conf: Path) -> None:
        self.spec = spec
        self.conf = conf
        self.stack_id = uuid.uuid4().hex
        self.supervisord_pid: int | None = None
        self.stop_requested_at: float | None = None

    def child_env(self) -> dict[str, str]:
        env = dict(self.spec.env)
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
            log.info("%s: stopping every service (at most %s s)", signal.Signals(signum).name, SHUTDOWN_TIMEOUT_SECONDS)
            send_signal(self.supervisord_pid, signal.SIGTERM)
        else:
            log.info("second signal: killing every service now")
            send_signal(self.supervisord_pid, signal.SIGKILL)

    def run(self) -> int:
        argv = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)]
        append_stdout_if_file()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.supervisord_pid = os.spawnve(os.P_NOWAIT, argv[0], argv, self.child_env())
        wake_supervisord(self.spec.paths.supervisor_socket)
        code = self.wait_for_supervisord()
        killed = kill_stack_processes(self.stack_id)
        if killed:
            log.info("killed %d leftover process(es) of the stack", killed)
        return code

    def wait_for_supervisord(self) -> int:
        """Reap every child (we may be PID 1) until supervisord exits; enforce the shutdown bound."""
        assert self.supervisord_pid is not None
        while True:
            if (
                self.stop_requested_at is not None
                and time.monotonic() - self.stop_requested_at > SHUTDOWN_TIMEOUT_SECONDS
            ):
                log.info("services did not stop in time: killing them")
                send_signal(self.supervisord_pid, signal.SIGKILL)
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


def run(container: bool) -> int:
    setup_logging()
    spec = prepare(container)
    conf = write_runtime_files(spec)
    log_banner(spec)
    return StackRunner(spec, conf).run()
