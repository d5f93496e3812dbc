"""A wheel install (`pip install reranker-template`, no checkout beside it) has everything `reranker serve` reads.

The wheel is built from this checkout and installed with --no-deps into a fresh virtualenv whose only other
import path is the development environment's site-packages (vLLM, aiohttp, ... are reused, not reinstalled);
everything then runs from a directory outside the checkout, so nothing can be found beside the package.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support.stack_runner import REPO, minilm_dir

pytestmark = pytest.mark.slow

RENDER = """
import sys
from pathlib import Path
import reranker_template
from reranker_template.paths import container_paths
from reranker_template.serve.supervisor import SupervisorConfig, render

state = Path(sys.argv[1])
paths = container_paths({"RERANKER_STATE_DIR": str(state / "s"), "RERANKER_LOG_DIR": str(state / "l")}, workspace=state)
print(reranker_template.__file__)
print(render(SupervisorConfig(python=sys.executable, paths=paths, provisioning=True)))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        check=True,
        cwd=root,
    )
    (wheel,) = root.glob("reranker_template-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies: the development environment's packages, as a plain path entry (its .pth files, among
    # them the editable install of this checkout, are not processed from there).
    (site / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        # --python: pip installs into that interpreter's environment (console scripts run with it).
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        cwd=root,
    )
    return venv


def outside_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH (it could point at a checkout) and a HOME of its own."""
    return {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **extra}


def test_the_installed_wheel_renders_the_stacks_supervisord_config(wheel_env: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(wheel_env / "bin" / "python"), "-c", RENDER, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=outside_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    package_file, config = result.stdout.split("\n", 1)
    assert package_file.startswith(str(wheel_env)), f"imported {package_file}, not the wheel"
    assert "[supervisord]" in config and "[program:vllm]" in config and "[program:gateway]" in config
    assert "[program:provisioning]" in config and "${" not in config


def test_the_installed_wheel_plans_with_its_templates(wheel_env: Path, tmp_path: Path) -> None:
    """`reranker plan` from the wheel's own console script; the Qwen3 preset reads a template shipped inside."""
    env = outside_env(tmp_path, MODEL_NAME=str(minilm_dir()))
    plan = subprocess.run(
        [str(wheel_env / "bin" / "reranker"), "plan"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert plan.returncode == 0, plan.stderr
    assert "vllm.entrypoints.openai.api_server" in plan.stdout
    qwen = subprocess.run(
        [
            str(wheel_env / "bin" / "python"),
            "-c",
            "from reranker_template.plan.presets import qwen3_template; print(qwen3_template('Find code'))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=outside_env(tmp_path),
    )
    assert qwen.returncode == 0, qwen.stderr
    assert "Find code" in qwen.stdout
