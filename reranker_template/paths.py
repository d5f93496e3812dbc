"""Where the stack keeps its state, logs and caches: container layout versus a user's machine.

`reranker boot` (the container entrypoint) uses the layout Vast tooling expects: logs in
/var/log/portal/<service>.log, caches and state under /workspace when it exists. `reranker serve`
uses user-writable XDG paths so it needs no root. RERANKER_STATE_DIR / RERANKER_LOG_DIR (and
RERANKER_BAKED_DIR) override both (the tests use them to keep every run in its own temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONTAINER_LOG_DIR = Path("/var/log/portal")
WORKSPACE = Path("/workspace")
# Models baked into the image at build time (serve/baked.py): outside /workspace, which a volume hides.
BAKED_MODELS_DIR = Path("/opt/reranker-models")


@dataclass(frozen=True)
class Paths:
    state_dir: Path  # token file, rendered supervisord.conf, plan.json, status files
    log_dir: Path  # one <service>.log per supervisord program
    cache_dir: Path | None  # HF_HOME / VLLM_CACHE_ROOT default; None keeps the libraries' own defaults
    container: bool
    build_cache: Path | None = None  # models the stack builds itself (the bundled cross-encoder); None: state
    baked_dir: Path | None = None  # models baked into the image (serve/baked.py)

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def plan_file(self) -> Path:
        return self.state_dir / "plan.json"

    @property
    def supervisor_conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.state_dir / "supervisor.sock"

    @property
    def vllm_status_file(self) -> Path:
        """Written by the vLLM launcher (phase, reason), read by the gateway's /health."""
        return self.state_dir / "vllm-status.json"

    @property
    def models_dir(self) -> Path:
        """Where models we build ourselves live (serve/bundled_model.py): the XDG cache with `reranker serve`
        (~/.cache/reranker/models), the persistent volume in the container; built once, kept across runs."""
        return self.build_cache or self.state_dir / "models"

    @property
    def provisioning_marker_dir(self) -> Path:
        """Where PROVISIONING_SCRIPT's markers live: `/` in the container (Vast's convention), else state."""
        return Path("/") if self.container else self.state_dir

    def cache_env(self) -> dict[str, str]:
        """Where Hugging Face and vLLM keep their caches, as defaults for the stack's environment: on the
        persistent volume in the container, so a restarted instance neither downloads nor compiles again
        (the image sets both too); nothing elsewhere, so `reranker serve` uses the libraries' own defaults."""
        if self.cache_dir is None:
            return {}
        return {"HF_HOME": str(self.cache_dir / "huggingface"), "VLLM_CACHE_ROOT": str(self.cache_dir / "vllm")}

    def log_file(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def create(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)


def local_paths(env: Mapping[str, str] | None = None) -> Paths:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    state_root = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    state_dir = Path(env.get("RERANKER_STATE_DIR") or state_root / "reranker")
    log_dir = Path(env.get("RERANKER_LOG_DIR") or state_dir / "logs")
    build_cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "reranker" / "models"
    return Paths(
        state_dir=state_dir,
        log_dir=log_dir,
        cache_dir=None,
        container=False,
        build_cache=build_cache,
        baked_dir=baked_dir(env),
    )


def baked_dir(env: Mapping[str, str]) -> Path:
    """Where baked models are looked for: the image's directory, or RERANKER_BAKED_DIR (a bake --into)."""
    return Path(env.get("RERANKER_BAKED_DIR") or BAKED_MODELS_DIR)


def container_paths(env: Mapping[str, str] | None = None, workspace: Path = WORKSPACE) -> Paths:
    env = os.environ if env is None else env
    base = workspace if workspace.is_dir() else Path("/var/lib")
    state_dir = Path(env.get("RERANKER_STATE_DIR") or base / "reranker")
    log_dir = Path(env.get("RERANKER_LOG_DIR") or CONTAINER_LOG_DIR)
    cache_dir = workspace / ".cache" if workspace.is_dir() else None
    build_cache = cache_dir / "reranker" / "models" if cache_dir is not None else None
    return Paths(
        state_dir=state_dir,
        log_dir=log_dir,
        cache_dir=cache_dir,
        container=True,
        build_cache=build_cache,
        baked_dir=baked_dir(env),
    )


def default_paths(env: Mapping[str, str] | None = None) -> Paths:
    """The paths of the stack a command on this machine talks to (`reranker token`, `reranker query`)."""
    env = os.environ if env is None else env
    if env.get("RERANKER_STATE_DIR"):
        return local_paths(env)
    container = container_paths(env)
    if container.token_file.exists():
        return container
    return local_paths(env)
