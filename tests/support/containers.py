"""Containers from the host's side: the engine scripts/image.py chose (with this machine's flags), and one
running container of our image, driven as a Vast host or a user's `docker run` drives it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from support.lint_tools import REPO

IMAGE_SCRIPT = REPO / "scripts" / "image.py"


@dataclass(frozen=True)
class Engine:
    """scripts/image.py's engine as JSON: its command (global flags included) and the flags `run` needs here."""

    name: str
    command: tuple[str, ...]
    run_flags: tuple[str, ...]

    def __call__(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout)


def find_engine() -> Engine | str:
    """The engine `make image-cpu` uses, or why there is none (scripts/image.py's own one-line reason)."""
    shown = subprocess.run([sys.executable, str(IMAGE_SCRIPT), "engine"], capture_output=True, text=True, timeout=120)
    if shown.returncode != 0:
        return shown.stderr.strip() or f"scripts/image.py engine exited with {shown.returncode}"
    data = json.loads(shown.stdout)
    return Engine(data["name"], tuple(data["command"]), tuple(data["run_flags"]))


def engine_or_skip() -> Engine:
    """For an engine fixture: the engine, or the test skipped with scripts/image.py's reason."""
    found = find_engine()
    if isinstance(found, str):
        pytest.skip(f"no container engine: {found}")
    return found


@dataclass
class Container:
    """One `<engine> run -d` of an image; removed by `remove()` whatever state it is in."""

    engine: Engine
    name: str
    started_at: float = field(default=0.0)

    @classmethod
    def start(cls, engine: Engine, name: str, image: str, options: list[str]) -> Container:
        engine("rm", "-f", name)  # a leftover of an interrupted run
        container = cls(engine, name, time.monotonic())
        started = engine("run", "-d", "--name", name, *engine.run_flags, *options, image)
        assert started.returncode == 0, f"{engine.name} run failed:\n{started.stderr}"
        return container

    def logs(self) -> str:
        shown = self.engine("logs", self.name)
        return shown.stdout + shown.stderr

    def state(self) -> dict[str, object]:
        shown = self.engine("inspect", "--format", "{{json .State}}", self.name)
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    def wait_exit(self, timeout: float) -> int:
        """The container's exit status, once it has ended by itself within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.state().get("Running"):
            assert time.monotonic() < deadline, (
                f"{self.name} still running after {timeout:.0f} s:\n{self.logs()[-3000:]}"
            )
            time.sleep(0.5)
        return int(str(self.state()["ExitCode"]))

    def address(self) -> str:
        """The container's own address on the engine's bridge network."""
        shown = self.engine("inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name)
        return shown.stdout.strip()

    def published_ports(self) -> str:
        return self.engine("port", self.name).stdout

    def remove(self) -> None:
        self.engine("rm", "-f", self.name, timeout=60)
