"""The supervisord program that runs vLLM: preflight, start, watch, report.

Why a launcher between supervisord and vLLM:
- the model download and provisioning wait happen before vLLM, with progress in the log;
- vLLM's output goes to stdout (Vast's instance log) and to <log_dir>/vllm.log;
- the phase ("downloading", "starting", "ready", "failed" + reason) is written for the gateway's /health;
- preflight before the download (serve/preflight.py): a model that does not exist, is gated, has no such
  revision, an architecture vLLM cannot serve, no tokenizer, or no room on the disk stops here, in one sentence;
- a model that cannot load must not restart forever: vLLM's output is classified (serve/failures.py) into one
  sentence (cause and fix) for the log and /health; a failure a retry cannot fix ends the program FATAL at once,
  another is retried once. "FATAL at once": the next start exits immediately, so supervisord's startretries run
  out;
- once up, /health is watched: a hung vLLM (alive, not answering) is killed so supervisord restarts it.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from reranker_template.errors import ModelUnavailable
from reranker_template.paths import Paths, default_paths
from reranker_template.plan.contract import Device, Plan, read_plan
from reranker_template.plan.preflight import Advice
from reranker_template.plan.user_args import UserArgs
from reranker_template.serve.download import check_local_model, fetch_hub_model
from reranker_template.serve.failures import FailureContext, classify, telling_line
from reranker_template.serve.int8_copy import ensure_int8_copy
from reranker_template.serve.preflight import Target, preflight
from reranker_template.serve.processes import setup_logging, signal_group_except_self
from reranker_template.serve.provisioning import wait_for_provisioning
from reranker_template.serve.status import MAX_LOAD_FAILURES, Phase, QualityState, VllmStatus, read_status, write_status
from reranker_template.settings import Settings, is_true, load_settings

# Seconds vLLM gets to stop on SIGTERM before its process group is killed.
STOP_GRACE_SECONDS = 15.0
# Seconds between asks of vLLM's /health while it starts: a refused connection costs nothing, and the
# known-answer check and the serverless worker's readiness follow this one.
READY_POLL_SECONDS = 0.1
# The exit status of a start after the launcher gave up (exits at once, so supervisord FATALs).
EXIT_GAVE_UP = 3
# Environment vLLM must not see: VLLM_API_KEY would make vLLM demand a key on loopback (the gateway does auth).
SCRUBBED_ENV = ("VLLM_API_KEY",)

log = logging.getLogger("reranker.launcher")


class OutputPump(threading.Thread):
    """Copies vLLM's output to our stdout and the log file, keeping the tail to explain a failure."""

    def __init__(self, source: IO[bytes], log_path: Path) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.log_path = log_path
        # Long enough for the root cause, which vLLM prints above its engine's and API server's tracebacks.
        self.tail: collections.deque[str] = collections.deque(maxlen=400)

    def run(self) -> None:
        with open(self.log_path, "ab") as log_file:
            for line in iter(self.source.readline, b""):
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
                log_file.write(line)
                log_file.flush()
                self.tail.append(line.decode("utf-8", "replace").rstrip())

    def lines(self) -> list[str]:
        return list(self.tail)


def health_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Launcher:
    def __init__(self, settings: Settings, paths: Paths, plan: Plan, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.paths = paths
        self.plan = plan
        self.env = dict(os.environ if env is None else env)  # what vLLM's environment starts from
        self.status = read_status(paths.vllm_status_file) or VllmStatus()
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.health_url = f"http://127.0.0.1:{plan.vllm_port}/health"

    def report(self, phase: Phase, reason: str | None = None, **changes: Any) -> None:
        self.status = self.status.moved_to(phase, reason, **changes)
        write_status(self.paths.vllm_status_file, self.status)

    def report_quality(self, state: QualityState, detail: str | None) -> None:
        self.status = self.status.with_quality(state, detail)
        write_status(self.paths.vllm_status_file, self.status)

    def give_up(self, reason: str, *, final: bool) -> int:
        """Report a failed start loudly. `final`: a retry cannot help, so the next start gives up at once."""
        failures = MAX_LOAD_FAILURES if final else self.status.load_failures + 1
        self.report(Phase.FAILED, reason, load_failures=failures)
        rule = "=" * 100
        log.error(rule)
        log.error("vLLM cannot serve %s: %s", self.plan.model, reason)
        if failures >= MAX_LOAD_FAILURES:
            log.error("not retrying: fix the cause, then restart the stack (or `supervisorctl restart vllm`)")
        else:
            log.error("retrying once, in case it was transient")
        log.error(rule)
        return 1

    def preflight_target(self) -> Target:
        fix = "free space there or point HF_HOME at a bigger volume"
        if self.paths.container:
            fix += ", or rent a bigger disk (reranker vast launch --disk GB)"
        return Target(advice=Advice(bigger_disk=fix), token=self.settings.hf_token)

    def check(self, offline: bool = False) -> None:
        """The preflight checks; ModelUnavailable with the first failed one's sentence."""
        report = preflight(
            self.settings, self.env, self.preflight_target(), argv=self.plan.vllm_command, offline=offline
        )
        for line in report.lines():
            log.info("preflight: %s", line)
        report.raise_for_problem()

    def preflight(self) -> dict[str, str] | None:
        """Provisioning wait, preflight checks, model files and the plan's int8 copy. Returns extra env for
        vLLM, or None after a failure was reported (FATAL at once: nothing here is fixed by trying again)."""
        if not self.wait_for_provisioning():
            return None
        try:
            source, extra_env = self.model_files()
            if self.plan.quantized_copy is not None:
                self.report(Phase.QUANTIZING)
                log.info("%s", ensure_int8_copy(source, self.plan.quantized_copy).log_line())
            return extra_env
        except ModelUnavailable as exc:
            self.give_up(str(exc), final=True)
            return None

    def model_files(self) -> tuple[Path, dict[str, str]]:
        """The checked model's directory (downloaded first for a hub id) and the env vLLM then needs."""
        if self.settings.model_is_local_path:
            check_local_model(self.settings.model_name)
            self.check()
            return Path(self.settings.model_name), {}
        self.report(Phase.DOWNLOADING)
        offline = is_true(self.env.get("HF_HUB_OFFLINE"))
        if not offline:
            self.check()
        revision = UserArgs(self.plan.vllm_command).value("--revision")
        token = self.settings.hf_token
        files = fetch_hub_model(self.settings.model_name, token, revision=revision, offline=offline)
        if offline:
            self.check(offline=True)
        return Path(files.path), {"HF_HUB_OFFLINE": "1"} if files.offline else {}

    def failure_context(self) -> FailureContext:
        return FailureContext(
            model=self.plan.model,
            port=self.plan.vllm_port,
            cuda_version=self.env.get("CUDA_VERSION"),
            gpu=self.plan.device is Device.CUDA,
            log_hint=str(self.paths.log_file("vllm")),
        )

    def wait_for_provisioning(self) -> bool:
        """False when PROVISIONING_SCRIPT failed and PROVISIONING_FAILURE=stop (the failure is reported)."""
        marker_dir = self.paths.provisioning_marker_dir
        if (marker_dir / ".provisioning").exists():
            self.report(Phase.PROVISIONING)
            log.info("waiting for PROVISIONING_SCRIPT to finish")
        outcome = wait_for_provisioning(marker_dir, self.settings.provisioning_timeout + 60)
        if not outcome.may_start_vllm:
            self.give_up(outcome.reason or "PROVISIONING_SCRIPT failed (PROVISIONING_FAILURE=stop)", final=True)
            return False
        return True

    def run(self) -> int:
        if self.status.load_failures >= MAX_LOAD_FAILURES:
            log.info("vLLM failed to start %d times: %s", self.status.load_failures, self.status.reason)
            log.info("giving up; fix the cause, then restart the stack (or `supervisorctl restart vllm`)")
            return EXIT_GAVE_UP
        extra_env = self.preflight()
        if extra_env is None or self.stopping.is_set():
            return 0 if self.stopping.is_set() else 1

        env = {k: v for k, v in self.env.items() if k not in SCRUBBED_ENV}
        env.update(self.plan.vllm_env)
        env.update(extra_env)
        self.report(Phase.STARTING, quality_check=QualityState.PENDING, quality_detail=None)
        log.info("starting vLLM: %s", " ".join(self.plan.vllm_command))
        self.child = subprocess.Popen(self.plan.vllm_command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.child.stdout is not None
        pump = OutputPump(self.child.stdout, self.paths.log_file("vllm"))
        pump.start()

        became_ready = self.wait_until_ready()
        if became_ready:
            self.report(Phase.READY, load_failures=0)
            log.info("vLLM is ready on 127.0.0.1:%s", self.plan.vllm_port)
            self.after_ready()
            self.watch()
        code = self.child.wait()
        # vLLM's engine process outlives an API server that was killed (SIGKILL, OOM killer): it would hold
        # its memory (on a GPU, the card) while supervisord starts the next vLLM. End what is left of vLLM.
        signal_group_except_self(signal.SIGKILL)
        pump.join(timeout=5)
        if self.stopping.is_set():
            self.report(Phase.STOPPED)
            return 0
        if not became_ready:
            diagnosis = classify(pump.lines(), self.failure_context(), code)
            log.info(
                "vLLM's exit classified as %s (retry %s)",
                diagnosis.cause,
                "may help" if diagnosis.retry_helps else "cannot help",
            )
            return self.give_up(diagnosis.sentence, final=not diagnosis.retry_helps)
        self.report(Phase.DOWN, f"vLLM exited with status {code}: {telling_line(pump.lines())}")
        log.info("vLLM exited with status %s; supervisord will restart it", code)
        return 1

    def wait_until_ready(self) -> bool:
        assert self.child is not None
        while self.child.poll() is None and not self.stopping.is_set():
            if health_ok(self.health_url, timeout=2):
                return True
            time.sleep(READY_POLL_SECONDS)
        return False

    def after_ready(self) -> None:
        """The boot-time known-answer check (quality.py), in the background so readiness is not delayed."""
        from reranker_template.serve.quality import run_quality_check

        def check() -> None:
            outcome = run_quality_check(self.settings, self.plan)
            self.report_quality(outcome.state, outcome.detail)

        threading.Thread(target=check, daemon=True).start()

    def watch(self) -> None:
        """Kill a vLLM that stops answering /health for watchdog_timeout seconds (supervisord restarts us)."""
        assert self.child is not None
        last_ok = time.monotonic()
        interval = min(5.0, self.settings.watchdog_timeout / 3)
        while self.child.poll() is None and not self.stopping.is_set():
            time.sleep(interval)
            if health_ok(self.health_url, timeout=max(1.0, interval)):
                last_ok = time.monotonic()
                continue
            silent = time.monotonic() - last_ok
            if silent >= self.settings.watchdog_timeout and self.child.poll() is None:
                log.warning(
                    "vLLM has not answered /health for %.0f s although it is running: killing it for a restart", silent
                )
                self.report(Phase.DOWN, f"vLLM stopped answering for {silent:.0f} s; restarting it")
                signal_group_except_self(signal.SIGKILL)
                return

    def stop(self, signum: int, _frame: object) -> None:
        """SIGTERM from supervisord (which sends it to our whole group, vLLM included)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        threading.Thread(target=self._stop_child, daemon=True).start()

    def _stop_child(self) -> None:
        if self.child is None:
            return
        try:
            self.child.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.info("vLLM ignored SIGTERM for %.0f s: killing its process group", STOP_GRACE_SECONDS)
            signal_group_except_self(signal.SIGKILL)


def main(load: Callable[[], Settings] = load_settings) -> int:
    setup_logging()
    settings = load()
    paths = default_paths()
    plan = read_plan(paths.plan_file)
    launcher = Launcher(settings, paths, plan, os.environ)
    signal.signal(signal.SIGTERM, launcher.stop)
    signal.signal(signal.SIGINT, launcher.stop)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
