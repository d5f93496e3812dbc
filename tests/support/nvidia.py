"""A stand-in GPU box: the fake nvidia-smi, the GPU boxes users rent, and the model fixtures as the HF cache holds them.

Two ways to use the same boxes and models:
- as facts, for the pure planning tests: `inventory_gpus("2xL4")` is the `Gpu` tuple nvidia-smi would report
  there, `cached_models(dir)` the `ModelInfo` each fixture model gets from an offline Hugging Face cache;
- end to end, through `Box`: a clean environment with the fake nvidia-smi first on PATH and an offline
  Hugging Face cache, on which `reranker plan --json` runs in-process.
nvidia-smi is the one piece of hardware we fake (support/fake_nvidia_smi); models are the configs and sizes of
the real checkpoints (tests/fixtures/models), with sparse weight files, so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from reranker_template import cli
from reranker_template.facts.gpus import Gpu, GpuSource
from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo, inspect_model
from reranker_template.plan import Plan, make_plan
from reranker_template.settings import load_settings

SUPPORT = Path(__file__).parent
FAKE_SMI = SUPPORT / "fake_nvidia_smi"
MODELS = SUPPORT.parent / "fixtures" / "models"

# What `nvidia-smi` reports on the boxes users rent (memory.total in MiB, as the real cards report it);
# "p2p" is the status of every GPU pair in `nvidia-smi topo -p2p r` (None: the topology query fails).
INVENTORIES: dict[str, dict[str, Any]] = {
    "1xT4": {"gpus": [{"name": "Tesla T4", "memory_mib": 15360, "compute_cap": "7.5", "count": 1}], "p2p": "OK"},
    "2xL4": {"gpus": [{"name": "NVIDIA L4", "memory_mib": 23034, "compute_cap": "8.9", "count": 2}], "p2p": "NS"},
    "3xA10": {"gpus": [{"name": "NVIDIA A10", "memory_mib": 23028, "compute_cap": "8.6", "count": 3}], "p2p": "OK"},
    "4xA100": {
        "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "compute_cap": "8.0", "count": 4}],
        "p2p": "OK",
    },
    "8x4090": {
        "gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_mib": 24564, "compute_cap": "8.9", "count": 8}],
        "p2p": "CNS",
    },
}

MODEL_DIRS = {
    "0.6B": "Qwen3-Reranker-0.6B",
    "4B": "Qwen3-Reranker-4B",
    "8B": "Qwen3-Reranker-8B",
    "bge": "bge-reranker-v2-m3",
    "jina": "jina-reranker-m0",
    "giant": "Giant-Reranker-35B",
}


def install_fake_nvidia_smi(bin_dir: Path) -> None:
    """`nvidia-smi` in bin_dir, running the fake with this Python directly (a shebang through a pyenv
    shim costs 150 ms a call, and every plan asks twice)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE_SMI}" "$@"\n')
    script.chmod(0o755)


def fake_smi_env(tmp: Path, inventory: str | dict[str, Any]) -> dict[str, str]:
    """The environment under which the fake nvidia-smi (installed in tmp/bin) reports `inventory`."""
    install_fake_nvidia_smi(tmp / "bin")
    path = tmp / "inventory.json"
    path.write_text(json.dumps(INVENTORIES[inventory] if isinstance(inventory, str) else inventory))
    return {"PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_NVIDIA_SMI_INVENTORY": str(path)}


def inventory_gpus(inventory: str, *, p2p_matrix: bool = True) -> tuple[Gpu, ...]:
    """The GPUs `detect_gpus` finds on this box through the fake nvidia-smi, as facts (no process started).

    p2p_matrix=False: `nvidia-smi topo -p2p r` failed, so the links are unknown (as with "p2p": null).
    """
    data = INVENTORIES[inventory]
    cards = [card for card in data["gpus"] for _ in range(int(card.get("count", 1)))]
    count = len(cards)
    # Like detect_gpus: the P2P matrix is asked for only with several GPUs; "OK" links every pair.
    known = count > 1 and p2p_matrix and data.get("p2p") is not None
    linked = data.get("p2p") == "OK"
    return tuple(
        Gpu(
            index=i,
            name=card["name"],
            memory_mib=int(card["memory_mib"]),
            compute_capability=float(card.get("compute_cap", 0.0)),
            uuid=f"GPU-{i:08x}-fake-4000-8000-{i:012x}",
            p2p_peers=tuple(j for j in range(count) if j != i and linked) if known else None,
        )
        for i, card in enumerate(cards)
    )


def repo_id(model: str) -> str:
    return str(json.loads((MODELS / MODEL_DIRS[model] / "files.json").read_text())["repo_id"])


def build_hf_cache(hub: Path, model: str, *, weights: bool = True, config_only: bool = False) -> str:
    """A Hugging Face cache entry as `huggingface_hub` leaves it: refs/main, snapshots/<rev> -> blobs.

    Weight files are sparse (os.truncate): they have their real size and take no disk space.
    """
    src = MODELS / MODEL_DIRS[model]
    facts = json.loads((src / "files.json").read_text())
    repo = str(facts["repo_id"])
    root = hub / ("models--" + repo.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)

    def add(name: str, content: bytes | None = None, size: int = 0) -> None:
        blob = root / "blobs" / name.replace(".", "-")  # real blobs are named by hash; any unique name will do
        if (snapshot / name).is_symlink():
            (snapshot / name).unlink()
        if content is not None:
            blob.write_bytes(content)
        else:
            with open(blob, "wb") as f:
                os.truncate(f.fileno(), size)
        (snapshot / name).symlink_to(blob)

    names = ["config.json"] if config_only else ["config.json", "tokenizer_config.json", "model.safetensors.index.json"]
    for name in names:
        if (src / name).exists():
            add(name, (src / name).read_bytes())
    if weights and not config_only:
        for name, size in facts["files"].items():
            if len(facts["files"]) == 1:  # single-file checkpoints have no index: only the file tells the size
                add(name, size=size)
    return repo


def cached_models(hub: Path) -> dict[str, ModelInfo]:
    """Every fixture model's facts, as `inspect_model` reads them from an offline Hugging Face cache in `hub`."""
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    return {name: inspect_model(build_hf_cache(hub, name), is_local=False, env=env) for name in MODEL_DIRS}


def local_model_dir(tmp: Path, model: str) -> Path:
    """A model directory as `MODEL_NAME=/path` users give it: configs plus (sparse) weight files."""
    src = MODELS / MODEL_DIRS[model]
    target = tmp / MODEL_DIRS[model]
    target.mkdir()
    for name in ("config.json", "tokenizer_config.json", "model.safetensors.index.json"):
        if (src / name).exists():
            (target / name).write_bytes((src / name).read_bytes())
    for name, size in json.loads((src / "files.json").read_text())["files"].items():
        with open(target / name, "wb") as f:
            os.truncate(f.fileno(), size)
    return target


class Box:
    """One test's machine: a clean environment, a fake nvidia-smi, an offline HF cache."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.monkeypatch, self.capsys = tmp, monkeypatch, capsys
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.hub = tmp / "hf" / "hub"
        self.hub.mkdir(parents=True)
        for name in list(os.environ):
            if name not in ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")
        monkeypatch.setenv("HOME", str(tmp / "home"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg-cache"))
        monkeypatch.setenv("HF_HOME", str(tmp / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def gpus(self, inventory: str | dict[str, Any], **extra: object) -> None:
        data = dict(INVENTORIES[inventory] if isinstance(inventory, str) else inventory, **extra)
        path = self.tmp / "inventory.json"
        path.write_text(json.dumps(data))
        install_fake_nvidia_smi(self.bin)
        self.monkeypatch.setenv("FAKE_NVIDIA_SMI_INVENTORY", str(path))

    def model(self, model: str, **kwargs: bool) -> str:
        repo = build_hf_cache(self.hub, model, **kwargs)
        self.monkeypatch.setenv("MODEL_NAME", repo)
        return repo

    def env(self, **values: str) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)

    def plan(self) -> dict[str, Any]:
        self.capsys.readouterr()
        code = cli.main(["plan", "--json"])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data

    def plan_error(self) -> str:
        self.capsys.readouterr()
        code = cli.main(["plan", "--json"])
        out, err = self.capsys.readouterr()
        assert code == 2, out
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err  # one line, no traceback
        return lines[0]


# The Python that would run vLLM: any path will do, nothing is started.
RUNTIME = Runtime(python="/venv/bin/python")
MODELS_DIR = Path("/cache/reranker/models")  # where a plan on facts places the models the stack writes


def plan_on(gpus: str | tuple[Gpu, ...] | None, model: ModelInfo, cores: int = 2, **env: str) -> Plan:
    """The plan for `model` on a box (an INVENTORIES name, GPUs as facts, or None for a CPU) with `cores` CPU
    cores under these settings: `make_plan` on facts, as `reranker plan` would make it there, without a
    process or a file."""
    found = inventory_gpus(gpus) if isinstance(gpus, str) else (gpus or ())
    source = GpuSource.NVIDIA_SMI if found else GpuSource.NONE
    hardware = Hardware(gpus=found, cpu=CpuInfo(cores=cores), gpu_source=source)
    return make_plan(load_settings({"MODEL_NAME": model.name, **env}), hardware, model, RUNTIME, MODELS_DIR)
