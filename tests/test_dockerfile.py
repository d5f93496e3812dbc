"""The Dockerfiles (the image's, and its CPU base's) lint clean with hadolint; an ignored rule must say why."""

from __future__ import annotations

import re
import subprocess

import pytest
from support.lint_tools import REPO, tool, tool_env

DOCKERFILES = ("Dockerfile", "images/vllm-cpu/Dockerfile")


@pytest.mark.slow  # runs a linter as a process
def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", *DOCKERFILES],
        cwd=REPO,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, "hadolint found problems:\n" + result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_ignored_rule_says_why(dockerfile: str) -> None:
    """`# hadolint ignore=DLxxxx` must be followed by a reason on the same line or the comment above."""
    lines = (REPO / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+ignore=([\w,]+)(.*)", line)
        if not match:
            continue
        reason_here = match.group(2).strip(" :-#")
        reason_above = number > 0 and lines[number - 1].strip().startswith("#") and "hadolint" not in lines[number - 1]
        assert reason_here or reason_above, (
            f"{dockerfile} line {number + 1}: ignoring {match.group(1)} needs a comment saying why"
        )
    config = REPO / ".hadolint.yaml"
    assert not config.exists() or "#" in config.read_text(), ".hadolint.yaml ignores rules without a comment saying why"


@pytest.mark.slow  # runs a linter as a process
def test_provisioning_examples_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in (REPO / "provisioning").glob("*.sh"))
    assert scripts, "provisioning/ has no example scripts"
    result = subprocess.run([tool("shellcheck"), *scripts], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # runs a linter as a process
def test_hadolint_really_checks() -> None:
    """A clean result means something: the same call rejects a Dockerfile with well-known mistakes."""
    bad = "FROM ubuntu\nRUN apt-get install curl\n"
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "DL3006" in result.stdout  # untagged base image
