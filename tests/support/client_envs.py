"""The rerank client libraries people use, each in its own virtual environment, at today's pin and at the
newest release on the package index (one environment when they are the same).

They cannot share the test environment: langchain-cohere needs a newer cohere than seed 001's example
runs on (pyproject pins that one), and LiteLLM brings its own world. A test runs a short script in the
library's environment against the real stack and reads the script's JSON output.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

INSTALL_TIMEOUT = 900


@dataclass(frozen=True)
class ClientLibrary:
    name: str  # the distribution on PyPI
    pin: str  # the version the README's examples were checked with


LIBRARIES = {
    "cohere": ClientLibrary("cohere", "5.13.12"),
    "langchain-cohere": ClientLibrary("langchain-cohere", "0.6.0"),
    "litellm": ClientLibrary("litellm", "1.110.2"),
}


def newest_version(name: str) -> str | None:
    """The newest release on the index pip is configured for, or None when it cannot be asked."""
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name], capture_output=True, text=True, timeout=120
    )
    match = re.search(rf"^{re.escape(name)} \(([^)]+)\)", shown.stdout, re.MULTILINE)
    return match.group(1) if match else None


def versions_to_test(library: ClientLibrary) -> list[str]:
    newest = newest_version(library.name)
    return [library.pin] + ([newest] if newest and newest != library.pin else [])


@dataclass(frozen=True)
class ClientEnv:
    library: ClientLibrary
    version: str
    python: Path

    @classmethod
    def create(cls, library: ClientLibrary, version: str, root: Path) -> ClientEnv:
        """The environment for `library` at `version`: the test environment when it has that version
        (the cohere pin: pyproject), else a new one under `root`."""
        try:
            if importlib.metadata.version(library.name) == version:
                return cls(library, version, Path(sys.executable))
        except importlib.metadata.PackageNotFoundError:
            pass
        directory = root / f"{library.name}-{version}"
        python = directory / "bin" / "python"
        if not python.exists():
            venv.create(directory, with_pip=True)
        spec = f"{library.name}=={version}"
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert installed.returncode == 0, f"pip install {spec} failed:\n{installed.stderr[-3000:]}"
        return cls(library, version, python)

    def run(self, script: str, *args: str) -> dict[str, object]:
        """Run `script` (it prints one JSON object last) with `args`; its output, or an AssertionError."""
        done = subprocess.run([str(self.python), "-c", script, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{self.library.name} {self.version}:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
