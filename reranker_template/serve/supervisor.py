"""Render supervisord's configuration from the templates shipped in the package (`serve/conf/`), and wake
supervisord so that it starts them at once."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from reranker_template.paths import Paths
from reranker_template.serve.sshd import SshdProgram

# vLLM gets this long to stop on SIGTERM before its whole process group is killed.
VLLM_STOP_WAIT_SECONDS = 20
# Set by the image to the worker's own environment (the vastai SDK pins other versions than vLLM's).
WORKER_PYTHON_VAR = "RERANKER_WORKER_PYTHON"


def worker_python(env: Mapping[str, str], default: str) -> str:
    """The serverless worker's interpreter: the image's separate environment, else this Python."""
    return env.get(WORKER_PYTHON_VAR, "").strip() or default


def read_template(name: str) -> str:
    """One supervisord template, shipped inside the package (`serve/conf/`), so a wheel install works too."""
    return resources.files("reranker_template.serve").joinpath("conf", name).read_text()


@dataclass(frozen=True)
class SupervisorConfig:
    python: str
    paths: Paths
    provisioning: bool = False
    include_dir: str | None = None  # user services, e.g. /etc/supervisor/conf.d in the container
    sshd: SshdProgram | None = None  # only when a public key is configured and sshd exists
    worker_python: str | None = None  # the serverless worker's interpreter; None: no worker (not serverless)

    def programs(self) -> list[str]:
        names = ["gateway", "vllm"]
        if self.provisioning:
            names.insert(0, "provisioning")
        if self.sshd is not None:
            names.append("sshd")
        if self.worker_python is not None:
            names.append("worker")
        return names


def render(config: SupervisorConfig) -> str:
    include = f"\n[include]\nfiles = {config.include_dir}/*.conf\n" if config.include_dir else ""
    values = {
        "python": config.python,
        "state_dir": str(config.paths.state_dir),
        "log_dir": str(config.paths.log_dir),
        "stop_wait": str(VLLM_STOP_WAIT_SECONDS),
        "include": include,
        "sshd": str(config.sshd.binary) if config.sshd else "",
        "sshd_config": str(config.sshd.config) if config.sshd else "",
        "layout": "container" if config.paths.container else "local",
        "worker_python": config.worker_python or "",
        # Running as root is normal in a container; saying so keeps supervisord from warning about it.
        "user": "user=root\n" if os.geteuid() == 0 else "",
    }
    parts = [Template(read_template("supervisord.conf")).substitute(values)]
    for program in config.programs():
        parts.append(Template(read_template(f"{program}.conf")).substitute(values))
    return "".join(parts)


def wake_supervisord(control_socket: Path, timeout: float = 2.0) -> bool:
    """Connect once to supervisord's control socket, as soon as it listens. True when that worked.

    supervisord starts its programs only after the first wait on its sockets, which lasts up to a second
    when nothing happens (`runforever`: poll, then each group's transition). A connection ends that wait,
    so vLLM starts a second sooner: half of our own start-up time (BENCHMARKS.md, "Cold start").
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(str(control_socket))
            return True
        except OSError:  # not listening yet (or a stale socket file of an earlier run)
            time.sleep(0.01)
    return False
