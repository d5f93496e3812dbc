"""`reranker plan --json` picks the parallel layout a user should get, on every GPU box we stand in for.

nvidia-smi is the one piece of hardware we fake (tests/support/fake_nvidia_smi, first on PATH); models are hub ids
served from a Hugging Face cache built in tmp from tests/fixtures/models (configs and sizes of the real
checkpoints, sparse weight files), with HF_HUB_OFFLINE=1, so nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fake_hub import LoopbackHub

from reranker_template import cli
from reranker_template.facts.model import ModelInfo, inspect_model
from reranker_template.plan.layout import required_gpu_memory_gib, tp_problem

TESTS = Path(__file__).parent
FAKE_SMI = TESTS / "support" / "fake_nvidia_smi"
MODELS = TESTS / "fixtures" / "models"
RERANKER = Path(sys.executable).parent / "reranker"

# What `nvidia-smi` reports on the boxes users rent (memory.total in MiB, as the real cards report it).
INVENTORIES = {
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
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE_SMI}" "$@"\n')
    script.chmod(0o755)


def repo_id(model: str) -> str:
    return json.loads((MODELS / MODEL_DIRS[model] / "files.json").read_text())["repo_id"]


def build_hf_cache(hub: Path, model: str, *, weights: bool = True, config_only: bool = False) -> str:
    """A Hugging Face cache entry as `huggingface_hub` leaves it: refs/main, snapshots/<rev> -> blobs.

    Weight files are sparse (os.truncate): they have their real size and take no disk space.
    """
    src = MODELS / MODEL_DIRS[model]
    facts = json.loads((src / "files.json").read_text())
    repo = facts["repo_id"]
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

    def gpus(self, inventory: str | dict, **extra: object) -> None:
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

    def plan(self) -> dict:
        self.capsys.readouterr()
        code = cli.main(["plan", "--json"])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    def plan_error(self) -> str:
        self.capsys.readouterr()
        code = cli.main(["plan", "--json"])
        out, err = self.capsys.readouterr()
        assert code == 2, out
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err  # one line, no traceback
        return lines[0]


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)


def options(plan: dict) -> dict[str, str | None]:
    """The flags of the vLLM command after `--port N`, as {option: value}."""
    argv = plan["vllm_command"]
    found: dict[str, str | None] = {}
    i = argv.index("--port") + 2
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            found[argv[i]] = argv[i + 1]
            i += 2
        else:
            found[argv[i]] = None
            i += 1
    return found


# (inventory, model) -> (tensor parallel, data parallel), or the start of the error a user sees.
FITS_ONE = {"0.6B", "4B", "bge", "jina"}
EXPECTED: dict[tuple[str, str], tuple[int, int] | str] = {}
for _inv, _n in (("1xT4", 1), ("2xL4", 2), ("3xA10", 3), ("4xA100", 4), ("8x4090", 8)):
    for _m in FITS_ONE:
        EXPECTED[(_inv, _m)] = (1, _n)
    EXPECTED[(_inv, "8B")] = (1, _n)
    EXPECTED[(_inv, "giant")] = "needs about 82.2 GiB on one GPU"
EXPECTED[("1xT4", "8B")] = "needs about 22.0 GiB on one GPU"  # 16 GB of bf16 weights on a 15 GiB card
EXPECTED[("4xA100", "giant")] = (2, 2)  # 70 GB weights + working memory exceed 80 GiB: TP 2, twice
EXPECTED[("8x4090", "giant")] = (4, 2)  # TP 4 fits 24 GiB cards; 8 GPUs make two engines


@pytest.mark.parametrize(("inventory", "model"), sorted(EXPECTED), ids=lambda v: v)
def test_use_all_gpus_layout(box: Box, inventory: str, model: str) -> None:
    box.gpus(inventory)
    box.model(model)
    expected = EXPECTED[(inventory, model)]
    if isinstance(expected, str):
        message = box.plan_error()
        assert expected in message
        assert "It needs a GPU with at least" in message  # says what would work
        return
    plan = box.plan()
    tp, dp = expected
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (tp, dp)
    assert plan["gpu_count"] == len(plan["gpus"]) == int(inventory.split("x")[0])
    flags = options(plan)
    assert flags.get("--tensor-parallel-size") == (str(tp) if tp > 1 else None)
    assert flags.get("--data-parallel-size") == (str(dp) if dp > 1 else None)
    assert ("--tensor-parallel-size" in flags) == (tp > 1)
    assert ("--data-parallel-size" in flags) == (dp > 1)
    # Turing has no bf16; every later card keeps vLLM's default dtype.
    assert flags.get("--dtype") == ("float16" if inventory == "1xT4" else None)
    reasons = " ".join(plan["reasons"])
    assert "GiB per GPU" in reasons
    if dp > 1 and tp == 1:
        assert "data parallel, one engine per GPU" in reasons


def test_giant_model_on_4090s_disables_custom_all_reduce(box: Box) -> None:
    box.gpus("8x4090")
    box.model("giant")
    plan = box.plan()
    assert "--disable-custom-all-reduce" in options(plan)
    assert any("peer-to-peer" in r and "GPU0" in r for r in plan["reasons"])


def test_giant_model_on_a100s_keeps_custom_all_reduce(box: Box) -> None:
    box.gpus("4xA100")
    box.model("giant")
    plan = box.plan()
    assert "--disable-custom-all-reduce" not in options(plan)
    assert any("custom all-reduce kept" in r for r in plan["reasons"])


def test_no_p2p_matrix_falls_back_to_card_names(box: Box) -> None:
    """When `nvidia-smi topo` fails, L4s are known PCIe-only cards and A100s are trusted."""
    box.gpus("2xL4", p2p=None)
    box.model("4B")
    box.env(PARALLEL_MODE="tp")
    plan = box.plan()
    assert "--disable-custom-all-reduce" in options(plan)
    assert any("without reliable P2P" in r for r in plan["reasons"])

    box.gpus("4xA100", p2p=None)
    plan = box.plan()
    assert "--disable-custom-all-reduce" not in options(plan)


def test_use_all_gpus_false_uses_one_gpu(box: Box) -> None:
    box.gpus("4xA100")
    box.model("4B")
    box.env(USE_ALL_GPUS="false")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 1)
    assert "--data-parallel-size" not in options(plan)
    assert any("USE_ALL_GPUS=false" in r for r in plan["reasons"])


def test_use_all_gpus_false_with_a_model_too_big_for_one_gpu_says_what_works(box: Box) -> None:
    box.gpus("8x4090")
    box.model("giant")
    box.env(USE_ALL_GPUS="false")
    message = box.plan_error()
    assert "USE_ALL_GPUS=true" in message
    assert "tensor parallelism 4" in message


def test_use_all_gpus_false_on_a_t4_still_gets_float16(box: Box) -> None:
    box.gpus("1xT4")
    box.model("0.6B")
    box.env(USE_ALL_GPUS="0")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 1)
    assert options(plan)["--dtype"] == "float16"


def test_parallel_mode_tp_splits_over_all_gpus(box: Box) -> None:
    box.gpus("2xL4")
    box.model("4B")
    box.env(PARALLEL_MODE="tp")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (2, 1)
    flags = options(plan)
    assert flags["--tensor-parallel-size"] == "2"
    assert "--data-parallel-size" not in flags
    assert "--disable-custom-all-reduce" in flags  # L4s report no P2P
    assert any("data parallel" in r and "faster" in r for r in plan["reasons"])


def test_parallel_mode_tp_on_a100s(box: Box) -> None:
    box.gpus("4xA100")
    box.model("0.6B")
    box.env(PARALLEL_MODE="tp")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (4, 1)
    assert "--disable-custom-all-reduce" not in options(plan)


def test_parallel_mode_tp_that_does_not_divide_the_heads_stops(box: Box) -> None:
    box.gpus("3xA10")
    box.model("4B")
    box.env(PARALLEL_MODE="tp")
    message = box.plan_error()
    assert "3 does not divide its 32 attention heads" in message
    assert "CUDA_VISIBLE_DEVICES=0,1" in message
    assert "PARALLEL_MODE=auto" in message


def test_parallel_mode_tp_checks_kv_and_vision_heads(box: Box) -> None:
    box.gpus("3xA10")
    box.model("jina")  # 12 attention heads (3 divides them) but 2 KV heads
    box.env(PARALLEL_MODE="tp")
    assert "KV heads" in box.plan_error()


def test_parallel_mode_dp(box: Box) -> None:
    box.gpus("4xA100")
    box.model("8B")
    box.env(PARALLEL_MODE="dp")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 4)


def test_parallel_mode_dp_with_a_model_that_fits_no_gpu_stops(box: Box) -> None:
    box.gpus("8x4090")
    box.model("giant")
    box.env(PARALLEL_MODE="dp")
    message = box.plan_error()
    assert "PARALLEL_MODE=dp" in message
    assert "PARALLEL_MODE=auto would run tensor parallelism 4 x data parallelism 2" in message


@pytest.mark.parametrize(
    "spelling", ["-tp 2", "--tensor-parallel-size=2", "--tensor-parallel-size 2", "--tensor_parallel_size 2"]
)
def test_vllm_args_tensor_parallel_is_respected(box: Box, spelling: str) -> None:
    box.gpus("4xA100")
    box.model("4B")
    box.env(VLLM_ARGS=spelling)
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (2, 1)
    command = plan["vllm_command"]
    assert command[-len(spelling.split()) :] == spelling.split()  # appended as given
    # We add no parallel size of our own, in any spelling.
    ours = command[: len(command) - len(spelling.split())]
    assert not any(a.startswith(("--tensor-parallel", "--tensor_parallel", "-tp", "--data-parallel")) for a in ours)
    assert any("VLLM_ARGS sets the parallel layout" in r for r in plan["reasons"])


def test_vllm_args_tensor_parallel_without_p2p_gets_the_all_reduce_fix(box: Box) -> None:
    box.gpus("2xL4")
    box.model("4B")
    box.env(VLLM_ARGS="--tensor-parallel-size=2")
    plan = box.plan()
    assert plan["tensor_parallel_size"] == 2
    assert "--disable-custom-all-reduce" in options(plan)


def test_vllm_args_data_parallel_is_respected(box: Box) -> None:
    box.gpus("4xA100")
    box.model("0.6B")
    box.env(VLLM_ARGS="--data-parallel-size 4")
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 4)
    assert plan["vllm_command"].count("--data-parallel-size") == 1


def test_vllm_args_asking_for_more_gpus_than_visible_stops(box: Box) -> None:
    box.gpus("2xL4")
    box.model("0.6B")
    box.env(VLLM_ARGS="--data-parallel-size 4")
    message = box.plan_error()
    assert "needs 4 GPUs, but 2 are visible" in message


def test_vllm_args_tensor_parallel_that_does_not_divide_the_heads_stops(box: Box) -> None:
    box.gpus("3xA10")
    box.model("4B")
    box.env(VLLM_ARGS="-tp 3")
    message = box.plan_error()
    assert "3 does not divide its 32 attention heads" in message
    assert "sizes that work here: 2" in message


def test_cuda_visible_devices_limits_and_names_the_gpus(box: Box) -> None:
    box.gpus("4xA100")
    box.model("4B")
    box.env(CUDA_VISIBLE_DEVICES="1,3")
    plan = box.plan()
    assert plan["gpu_count"] == 2
    assert [g["index"] for g in plan["gpus"]] == [1, 3]
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 2)
    assert any("GPU 1,3)" in r for r in plan["reasons"])


def test_cuda_visible_devices_too_few_for_a_big_model(box: Box) -> None:
    box.gpus("8x4090")
    box.model("giant")
    box.env(CUDA_VISIBLE_DEVICES="1,3")
    message = box.plan_error()
    assert "4 GPUs like these with tensor parallelism 4" in message


def test_gpu_count_is_only_a_fallback(box: Box) -> None:
    box.model("4B")
    box.env(GPU_COUNT="2")  # no nvidia-smi on PATH
    plan = box.plan()
    assert plan["gpu_count"] == 2
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 2)
    assert any("GPU memory unknown" in r for r in plan["reasons"])
    box.gpus("1xT4")  # once nvidia-smi answers, GPU_COUNT is ignored
    assert box.plan()["gpu_count"] == 1


def test_no_gpu_means_cpu_mode(box: Box) -> None:
    box.model("0.6B")
    plan = box.plan()
    assert plan["device"] == "cpu"
    assert (plan["gpu_count"], plan["tensor_parallel_size"], plan["data_parallel_size"]) == (0, 1, 1)


def test_offline_and_uncached_model_is_planned_conservatively(box: Box) -> None:
    box.gpus("4xA100")
    box.env(MODEL_NAME="someone/unknown-reranker")
    plan = box.plan()
    assert plan["model_source"] == "unknown"
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 4)
    reasons = " ".join(plan["reasons"])
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in reasons
    assert "PARALLEL_MODE=tp" in reasons  # tells the user the way out if the guess is wrong


def test_cached_config_without_weights_is_estimated_from_shapes(box: Box) -> None:
    box.gpus("1xT4")
    box.model("8B", config_only=True)
    message = box.plan_error()  # 8.2B parameters in bf16 still do not fit a T4
    assert "estimated from config.json" in message


def test_local_model_directory(box: Box, tmp_path: Path) -> None:
    box.gpus("8x4090")
    directory = local_model_dir(tmp_path, "giant")
    box.env(MODEL_NAME=str(directory))
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (4, 2)
    assert plan["model_source"] == "local"


def test_model_sizes_come_from_the_cache_without_weights(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    build_hf_cache(hub, "4B")  # sharded: only the index is there
    build_hf_cache(hub, "bge")  # single file: its (sparse) size
    four_b = inspect_model(repo_id("4B"), is_local=False, env=env)
    assert four_b.source == "cache" and four_b.weight_source == "safetensors index"
    assert 8.0e9 < (four_b.weight_bytes or 0) < 8.1e9
    bge = inspect_model(repo_id("bge"), is_local=False, env=env)
    assert bge.weight_source == "files"
    assert bge.loaded_weight_bytes == (bge.weight_bytes or 0) // 2  # float32 checkpoint served in 16 bits
    assert bge.kv_bytes_per_token == 0  # encoder: no KV cache


def test_required_gpu_memory_for_offer_filters() -> None:
    def need(model: str) -> float | None:
        info = inspect_model(str(MODELS / MODEL_DIRS[model]), is_local=True)
        return required_gpu_memory_gib(info)

    assert need("bge") < need("0.6B") < need("jina") < need("4B") < 15  # all fit a 16 GB T4
    assert 16 < need("8B") < 22.4  # needs a 24 GB card
    assert need("giant") > 80
    assert required_gpu_memory_gib(ModelInfo(name="x", source="unknown")) is None


def test_tensor_parallel_sizes_follow_vllms_head_rule() -> None:
    jina = inspect_model(str(MODELS / MODEL_DIRS["jina"]), is_local=True)  # 12 heads, 2 KV heads, 16 vision heads
    assert tp_problem(jina, 2) is None
    assert tp_problem(jina, 4) is None  # 4 KV-head copies: allowed
    assert "KV heads" in (tp_problem(jina, 3) or "")
    assert "vision" in (tp_problem(jina, 6) or "")
    giant = inspect_model(str(MODELS / MODEL_DIRS["giant"]), is_local=True)  # 40 heads, 8 KV heads
    assert [tp for tp in range(1, 9) if tp_problem(giant, tp) is None] == [1, 2, 4, 8]


def test_reranker_plan_command(tmp_path: Path) -> None:
    """The installed command, as a user runs it: a layout, and a one-line error for an impossible one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_nvidia_smi(bin_dir)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORIES["8x4090"]))
    hub = tmp_path / "hf" / "hub"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "FAKE_NVIDIA_SMI_INVENTORY": str(inventory),
        "MODEL_NAME": build_hf_cache(hub, "giant"),
    }
    exe = [str(RERANKER)] if RERANKER.exists() else [sys.executable, "-m", "reranker_template.cli"]
    result = subprocess.run([*exe, "plan", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["gpu_count"], plan["tensor_parallel_size"], plan["data_parallel_size"]) == (8, 4, 2)

    result = subprocess.run(
        [*exe, "plan", "--json"], env={**env, "PARALLEL_MODE": "dp"}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("reranker: PARALLEL_MODE=dp") and result.stderr.count("\n") == 1


class FakeHub(LoopbackHub):
    """The Hugging Face hub's metadata API on loopback (the real hub is unreachable here).

    It serves /api/models/<repo> (file listing with sizes) and /<repo>/resolve/<rev>/<file> for the small
    JSON files, and records every path asked for, so a test can check no weight file was fetched.
    """

    def __init__(self, models: list[str]) -> None:
        super().__init__()
        self.repos = {repo_id(m): MODELS / MODEL_DIRS[m] for m in models}

    REVISION = "fedcba9876543210fedcba9876543210fedcba98"

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


def test_reranker_plan_reads_hub_metadata_without_downloading_weights(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_nvidia_smi(bin_dir)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORIES["8x4090"]))
    exe = [str(RERANKER)] if RERANKER.exists() else [sys.executable, "-m", "reranker_template.cli"]
    with FakeHub(["giant", "bge"]) as hub:
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path / "home"),
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": hub.url,
            "FAKE_NVIDIA_SMI_INVENTORY": str(inventory),
            "MODEL_NAME": repo_id("giant"),
        }
        result = subprocess.run([*exe, "plan", "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        plan = json.loads(result.stdout)
        assert plan["model_source"] == "hub"
        assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (4, 2)
        assert any("hub file sizes" in r for r in plan["reasons"])

        # A single-file float32 checkpoint: its size from the listing, halved because vLLM serves it in 16 bits.
        result = subprocess.run(
            [*exe, "plan", "--json"],
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
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path)}
    info = inspect_model("Qwen/Qwen3-Reranker-4B", is_local=False, env=env)
    assert info.source == "unknown" and not info.known
    assert "offline?" in info.note and "planning conservatively" in info.note
