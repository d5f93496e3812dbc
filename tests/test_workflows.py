"""The GitHub workflows lint clean with actionlint (which also runs shellcheck on `run:` steps)."""

from __future__ import annotations

import subprocess

import pytest
from support.lint_tools import REPO, tool, tool_env

pytestmark = pytest.mark.slow  # actionlint runs as a process


def test_actionlint_is_clean() -> None:
    workflows = sorted(str(p.relative_to(REPO)) for p in (REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "no workflows in .github/workflows"
    result = subprocess.run(
        [tool("actionlint"), "-no-color", "-oneline", *workflows],
        cwd=REPO,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, "actionlint found problems:\n" + result.stdout + result.stderr


def test_actionlint_really_checks(tmp_path) -> None:
    """A clean result means something: the same call rejects a workflow with an undefined output."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ steps.nope.outputs.x }}\n"
    )
    result = subprocess.run(
        [tool("actionlint"), "-no-color", "-oneline", str(bad)],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "nope" in result.stdout
