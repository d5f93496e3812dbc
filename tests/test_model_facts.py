"""What we know about a model before loading it (local directory, HF cache, hub metadata), and what it needs
from GPUs: the memory estimate and the tensor-parallel rule that the layout and `reranker vast search` share.

Models are the configs and sizes of the real checkpoints (tests/fixtures/models) in an HF cache built in tmp,
or served by a loopback stand-in for the hub's metadata API; no weight file is ever fetched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.fake_hub import LoopbackHub
from support.loopback import free_port
from support.nvidia import MODEL_DIRS, MODELS, build_hf_cache, fake_smi_env, repo_id

from reranker_template.facts.model import ModelInfo, ModelSource, inspect_model
from reranker_template.plan.memory import KV_CACHE_TOKENS, memory_need, required_gpu_memory_gib, tp_problem

RERANKER = Path(sys.executable).parent / "reranker"
EXE = [str(RERANKER)] if RERANKER.exists() else [sys.executable, "-m", "reranker_template.cli"]


def local(model: str) -> ModelInfo:
    return inspect_model(str(MODELS / MODEL_DIRS[model]), is_local=True)


def test_model_sizes_come_from_the_cache_without_weights(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    build_hf_cache(hub, "4B")  # sharded: only the index is there
    build_hf_cache(hub, "bge")  # single file: its (sparse) size
    four_b = inspect_model(repo_id("4B"), is_local=False, env=env)
    assert four_b.source is ModelSource.CACHE and four_b.weight_source == "safetensors index"
    assert 8.0e9 < (four_b.weight_bytes or 0) < 8.1e9
    bge = inspect_model(repo_id("bge"), is_local=False, env=env)
    assert bge.weight_source == "files"
    assert bge.loaded_weight_bytes == (bge.weight_bytes or 0) // 2  # float32 checkpoint served in 16 bits
    assert bge.kv_bytes_per_token == 0  # encoder: no KV cache


def test_hf_hub_offline_is_read_as_a_setting_is(tmp_path: Path) -> None:
    """Any of 1/true/yes/on, in any case, keeps the hub out of it (is_true), so an uncached model is unknown."""
    for value in ("1", "TRUE", "yes", " on "):
        env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": value, "HF_ENDPOINT": "http://127.0.0.1:9"}
        info = inspect_model("someone/uncached", is_local=False, env=env)
        assert info.source is ModelSource.UNKNOWN
        assert "HF_HUB_OFFLINE is set" in info.note


def test_required_gpu_memory_for_offer_filters() -> None:
    def need(model: str) -> float:
        gib = required_gpu_memory_gib(local(model))
        assert gib is not None
        return gib

    assert need("bge") < need("0.6B") < need("jina") < need("4B") < 15  # all fit a 16 GB T4
    assert 16 < need("8B") < 22.4  # needs a 24 GB card
    assert need("giant") > 80
    assert required_gpu_memory_gib(ModelInfo(name="x", source=ModelSource.UNKNOWN)) is None


def test_memory_need_splits_over_tensor_parallel_gpus_and_explains_itself() -> None:
    need = memory_need(local("giant"))
    assert need is not None and need.kv_cache_gib > 0  # a decoder keeps a KV cache
    assert need.per_gpu_gib(4) < need.per_gpu_gib(2) < need.per_gpu_gib(1)
    explained = need.explain(4)
    assert f"{need.per_gpu_gib(4):.1f} GiB per GPU" in explained
    assert f"({KV_CACHE_TOKENS} tokens)" in explained and "split over 4 GPUs" in explained
    encoder = memory_need(local("bge"))
    assert encoder is not None and "(encoder: no KV cache)" in encoder.explain()


def test_tensor_parallel_sizes_follow_vllms_head_rule() -> None:
    jina = local("jina")  # 12 heads, 2 KV heads, 16 vision heads
    assert tp_problem(jina, 2) is None
    assert tp_problem(jina, 4) is None  # 4 KV-head copies: allowed
    assert "KV heads" in (tp_problem(jina, 3) or "")
    assert "vision" in (tp_problem(jina, 6) or "")
    giant = local("giant")  # 40 heads, 8 KV heads
    assert [tp for tp in range(1, 9) if tp_problem(giant, tp) is None] == [1, 2, 4, 8]


class FakeHub(LoopbackHub):
    """The Hugging Face hub's metadata API on loopback (the real hub is unreachable here).

    It serves /api/models/<repo> (file listing with sizes) and /<repo>/resolve/<rev>/<file> for the small
    JSON files, and records every path asked for, so a test can check no weight file was fetched.
    """

    REVISION = "fedcba9876543210fedcba9876543210fedcba98"

    def __init__(self, models: list[str]) -> None:
        super().__init__()
        self.repos = {repo_id(m): MODELS / MODEL_DIRS[m] for m in models}

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        for repo, directory in self.repos.items():
            facts = json.loads((directory / "files.json").read_text())
            small = {p.name: p.read_bytes() for p in directory.glob("*.json") if p.name != "files.json"}
            if path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main"):
                siblings = [{"rfilename": name, "size": len(data)} for name, data in small.items()]
                siblings += [
                    {"rfilename": name, "size": size, "lfs": {"size": size, "sha256": "0" * 64, "pointerSize": 134}}
                    for name, size in facts["files"].items()
                ]
                info = {"id": repo, "modelId": repo, "sha": self.REVISION, "private": False, "siblings": siblings}
                return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                if name in small:
                    data = small[name]
                    etag = f'"{abs(hash(data)):x}"'
                    return 200, {"X-Repo-Commit": self.REVISION, "ETag": etag, "Content-Type": "application/json"}, data
        return 404, {"X-Error-Code": "EntryNotFound"}, b'{"error": "not found"}'


@pytest.mark.slow  # a loopback hub and `reranker plan` as a process
def test_reranker_plan_reads_hub_metadata_without_downloading_weights(tmp_path: Path) -> None:
    with FakeHub(["giant", "bge"]) as hub:
        env = {
            **fake_smi_env(tmp_path, "8x4090"),
            "HOME": str(tmp_path / "home"),
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": hub.url,
            "MODEL_NAME": repo_id("giant"),
        }
        result = subprocess.run([*EXE, "plan", "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        plan = json.loads(result.stdout)
        assert plan["model_source"] == "hub"
        assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (4, 2)
        assert any("hub file sizes" in r for r in plan["reasons"])

        # A single-file float32 checkpoint: its size from the listing, halved because vLLM serves it in 16 bits.
        result = subprocess.run(
            [*EXE, "plan", "--json"],
            env={**env, "MODEL_NAME": repo_id("bge")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        plan = json.loads(result.stdout)
        assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 8)
        assert any("float32 checkpoint served in 16 bits" in r for r in plan["reasons"])

    assert any("/api/models/" in r for r in hub.requests)
    assert not any(".safetensors" in r for r in hub.requests if "/resolve/" in r), hub.requests
    cached = list((tmp_path / "hf" / "hub").rglob("*"))
    assert any(p.name == "config.json" for p in cached)
    assert not any(p.name.endswith(".safetensors") for p in cached)


def test_unreachable_hub_plans_conservatively(tmp_path: Path) -> None:
    closed = free_port()  # a port nothing listens on
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path)}
    info = inspect_model("Qwen/Qwen3-Reranker-4B", is_local=False, env=env)
    assert info.source is ModelSource.UNKNOWN and not info.known
    assert "offline?" in info.note and "planning conservatively" in info.note
