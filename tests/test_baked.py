"""A model baked in at build time: `reranker bake` (what the Dockerfile runs), then a start that finds it.

The hub is a loopback stand-in; each command runs in a fresh interpreter (huggingface_hub reads HF_ENDPOINT
at import). tests/test_image.py builds an image with a model baked in and starts it with the hub out of reach.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.fake_hub import REVISION, FakeHub
from support.loopback import free_port
from support.stack_runner import minilm_dir

from reranker_template.plan.user_args import UserArgs
from reranker_template.serve.baked import BakedModel, directory_for, find_baked

pytestmark = pytest.mark.slow  # fresh interpreters against a loopback hub

REPO = "sentence-transformers/all-MiniLM-L6-v2"


def reranker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from reranker_template.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)


def env_for(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        **extra,
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM directory with a .bin copy of its weights and an ONNX export beside them, as hub repos often are."""
    repo = tmp_path_factory.mktemp("repo") / "minilm"
    shutil.copytree(minilm_dir(), repo)
    (repo / "pytorch_model.bin").write_bytes(b"\0" * 1000)
    (repo / "onnx").mkdir(exist_ok=True)
    (repo / "onnx" / "model.onnx").write_bytes(b"\0" * 1000)
    return repo


def test_bake_downloads_what_vllm_loads_and_a_start_serves_it_without_the_hub(repo: Path, tmp_path: Path) -> None:
    baked_dir = tmp_path / "baked"
    with FakeHub({REPO: repo}) as hub:
        baked = reranker(env_for(tmp_path, hub.url), "bake", REPO, "--into", str(baked_dir))
        assert baked.returncode == 0, baked.stdout + baked.stderr
        assert not [r for r in hub.requests if "pytorch_model.bin" in r or ".onnx" in r]
    target = directory_for(REPO, baked_dir)
    assert (target / "model.safetensors").stat().st_size == (repo / "model.safetensors").stat().st_size
    assert not (target / "pytorch_model.bin").exists() and not (target / "onnx").exists()
    assert json.loads((target / "baked.json").read_text()) == {"model": REPO, "revision": None, "commit": REVISION}
    assert f"baked {REPO}" in baked.stderr + baked.stdout

    # The hub is gone (nothing listens at its address): the plan serves the baked directory under the hub id.
    dead = f"http://127.0.0.1:{free_port()}"
    env = env_for(tmp_path, dead, MODEL_NAME=REPO, RERANKER_BAKED_DIR=str(baked_dir), RERANKER_STATE_DIR=str(tmp_path))
    planned = reranker(env, "plan", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert UserArgs(plan["vllm_command"]).value("--served-model-name") == REPO
    assert str(target) in plan["vllm_command"]
    assert plan["reasons"][0].startswith(f"model: {REPO} baked into the image at commit {REVISION[:12]}")
    assert not (tmp_path / "hf" / "hub").exists()  # nothing was fetched into the cache


def test_a_revision_other_than_the_baked_one_is_not_served_from_it(tmp_path: Path) -> None:
    baked = BakedModel(model=REPO, revision="v1", commit=REVISION, path=directory_for(REPO, tmp_path))
    baked.path.mkdir(parents=True)
    (baked.path / "baked.json").write_text(json.dumps({"model": REPO, "revision": "v1", "commit": REVISION}))
    assert find_baked(REPO, None, tmp_path) == baked
    assert find_baked(REPO, "v1", tmp_path) == baked and find_baked(REPO, REVISION, tmp_path) == baked
    assert find_baked(REPO, "v2", tmp_path) is None
    assert find_baked("other/model", None, tmp_path) is None
    (baked.path / "baked.json").unlink()  # an interrupted bake is never served
    assert find_baked(REPO, None, tmp_path) is None


def test_baking_a_model_the_hub_does_not_have_is_one_line(tmp_path: Path, repo: Path) -> None:
    with FakeHub({REPO: repo}) as hub:
        result = reranker(env_for(tmp_path, hub.url), "bake", "nobody/no-such-model", "--into", str(tmp_path / "b"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("reranker: no model nobody/no-such-model on the hub")
    assert "Traceback" not in result.stderr
