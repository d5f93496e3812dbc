"""The CPU image with a model baked in (`scripts/image.py build cpu --model ...`, the Dockerfile's MODEL_NAME
build argument), started the way a serverless worker starts: an empty /workspace, no MODEL_NAME of its own,
and the hub out of reach. It must serve the baked model under its hub id and download nothing.

The hub at build time is a loopback stand-in serving the bundled cross-encoder under its hub id.
Skipped, with the reason, where no container engine runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.containers import IMAGE_SCRIPT, Container, Engine, engine_or_skip
from support.fake_hub import FakeHub
from support.loopback import free_ports

from reranker_template.serve import bundled_model
from reranker_template.settings import BUNDLED_MODEL

pytestmark = pytest.mark.slow

BAKED_IMAGE = "vllm-reranker:cpu-ms-marco-minilm-l-12-v2"  # scripts/image.py's tag for BUNDLED_MODEL
TOKEN = "open-button-token-for-the-baked-image"
READY_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_or_skip()


@pytest.fixture(scope="module")
def baked_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image-cpu MODEL_NAME=...` with the hub on loopback; the unbaked image's layers are reused."""
    model_dir = bundled_model.ensure_built(tmp_path_factory.mktemp("models")).path
    log = tmp_path_factory.mktemp("baked-build") / "build.log"
    with FakeHub({BUNDLED_MODEL: model_dir}) as hub, log.open("w") as out:
        command = [sys.executable, str(IMAGE_SCRIPT), "build", "cpu", "--model", BUNDLED_MODEL]
        built = subprocess.run([*command, "--hf-endpoint", hub.url], stdout=out, stderr=subprocess.STDOUT, timeout=2400)
    assert built.returncode == 0, "the baked image did not build:\n" + log.read_text()[-5000:]
    return BAKED_IMAGE


def test_a_baked_image_serves_its_model_and_downloads_nothing(engine: Engine, baked_image: str, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (port,) = free_ports(1)
    options = ["-p", f"127.0.0.1:{port}:8000", "-v", f"{workspace}:/workspace", "--shm-size=1g"]
    # No MODEL_NAME: the image's default is the baked model. A download attempt would fail: nothing listens there.
    options += ["-e", f"OPEN_BUTTON_TOKEN={TOKEN}", "-e", "HF_ENDPOINT=http://127.0.0.1:9"]
    container = Container.start(engine, "reranker-baked-test", baked_image, options)
    try:
        gateway, deadline = f"http://127.0.0.1:{port}", time.monotonic() + READY_TIMEOUT
        while not _healthy(gateway):
            assert container.state().get("Running"), "the container ended:\n" + container.logs()[-5000:]
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT:.0f} s:\n{container.logs()[-5000:]}"
            time.sleep(0.5)
        ready = time.monotonic() - container.started_at
        body = {
            "model": BUNDLED_MODEL,
            "query": "What is deep learning?",
            "documents": ["I like pizza", "Deep learning"],
        }
        ranked = requests.post(f"{gateway}/v1/rerank", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ranked.status_code == 200, ranked.text
        assert ranked.json()["results"][0]["index"] == 1
        logs = container.logs()
        assert f"model: {BUNDLED_MODEL} baked into the image" in logs
        assert "[download]" not in logs  # the launcher neither asked the hub nor fetched a file
        assert not (workspace / ".cache" / "huggingface" / "hub").exists()
        print(f"\nbaked image ready after {ready:.0f} s on an empty /workspace")
    finally:
        container.remove()


def _healthy(gateway: str) -> bool:
    try:
        return requests.get(gateway + "/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False
