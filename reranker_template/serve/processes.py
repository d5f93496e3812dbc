"""What the stack's runtime processes share: their log format, and ending the processes they leave behind.

Rules:
- One log line format for every program of the stack (`<time> [launcher] ...`), on stdout, which
  supervisord copies to the instance log; logger names are `reranker.<component>`.
- A process group is signalled member by member, leaving out the caller (the vLLM launcher leads the
  group that holds vLLM and its engine processes, and must outlive them to report).
- The processes of one stack are the ones that carry its id in their environment: a child that
  double-forked away from supervisord is still found, and another stack on the same machine is not.
- A provisioning script runs in its own session; on a timeout its whole group gets SIGTERM, then SIGKILL.
psutil lists processes and reads their environment; process groups are POSIX calls (psutil has none).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TextIO

import psutil

STACK_ID_VAR = "RERANKER_STACK_ID"
LOG_FORMAT = "%(asctime)s [%(component)s] %(message)s"


class _ComponentFormatter(logging.Formatter):
    """`reranker.launcher` is shown as `[launcher]`, as the programs' lines always looked."""

    def format(self, record: logging.LogRecord) -> str:
        record.component = record.name.removeprefix("reranker.")
        return super().format(record)


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Our one handler on the `reranker` logger (its class tells `setup_logging` it is installed)."""


def setup_logging(level: int = logging.INFO) -> None:
    """Send every `reranker.*` logger's lines to stdout, once per process (a second call changes nothing)."""
    logger = logging.getLogger("reranker")
    if any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        return
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(_ComponentFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)


def send_signal(pid: int, sig: int) -> bool:
    """Signal one process; False when it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """The pids of every live process in process group `pgid`."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except OSError:  # gone since the listing
            continue
    return members


def signal_group_except_self(sig: int) -> None:
    """Signal every process of our own process group but us (the launcher: vLLM and its engine processes)."""
    me = os.getpid()
    for pid in group_members(os.getpgid(0)):
        if pid != me:
            send_signal(pid, sig)


def processes_with_env(name: str, value: str) -> list[int]:
    """The pids of the processes (not us) whose environment has `name=value`; unreadable ones are skipped."""
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["environ"]):
        environ = process.info.get("environ")  # None when access is denied
        if process.pid != me and environ and environ.get(name) == value:
            found.append(process.pid)
    return found


def kill_stack_processes(stack_id: str) -> int:
    """SIGKILL every process that carries our stack id in its environment; returns how many were signalled."""
    return sum(send_signal(pid, signal.SIGKILL) for pid in processes_with_env(STACK_ID_VAR, stack_id))


def terminate_group(process: subprocess.Popen[str], grace_seconds: float) -> None:
    """SIGTERM the process group that `process` leads, then SIGKILL whatever is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        if wait is None:
            process.wait()
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children in the group may still run.
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
