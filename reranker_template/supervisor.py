"""Render supervisord's configuration from the templates in the repository's `supervisor/` folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .paths import Paths
from .sshd import SshdProgram

# vLLM gets this long to stop on SIGTERM before its whole process group is killed.
VLLM_STOP_WAIT_SECONDS = 20


def template_dir() -> Path:
    """The `supervisor/` folder: beside the package in a checkout or editable install (the image too)."""
    override = os.environ.get("RERANKER_SUPERVISOR_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parent.parent / "supervisor", Path("/opt/reranker/supervisor")]
    for candidate in candidates:
        if (candidate / "supervisord.conf").is_file():
            return candidate
    raise FileNotFoundError("supervisor templates not found; looked in " + ", ".join(map(str, candidates)))


@dataclass(frozen=True)
class SupervisorConfig:
    python: str
    paths: Paths
    provisioning: bool = False
    include_dir: str | None = None  # user services, e.g. /etc/supervisor/conf.d in the container
    sshd: SshdProgram | None = None  # only when a public key is configured and sshd exists

    def programs(self) -> list[str]:
        names = ["gateway", "vllm"]
        if self.provisioning:
            names.insert(0, "provisioning")
        if self.sshd is not None:
            names.append("sshd")
        return names


def render(config: SupervisorConfig, templates: Path | None = None) -> str:
    templates = templates or template_dir()
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
        # Running as root is normal in a container; saying so keeps supervisord from warning about it.
        "user": "user=root\n" if os.geteuid() == 0 else "",
    }
    parts = [Template((templates / "supervisord.conf").read_text()).substitute(values)]
    for program in config.programs():
        parts.append(Template((templates / f"{program}.conf").read_text()).substitute(values))
    return "".join(parts)
