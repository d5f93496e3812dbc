"""The parallel layout a user gets on every GPU box we stand in for: tensor or data parallel, which GPUs, GPU flags.

Table-driven on facts (support.nvidia: `inventory_gpus` is what nvidia-smi reports on the box, `cached_models`
what the offline Hugging Face cache tells about each model): settings + facts -> plan, in milliseconds. A few
cases run end to end, through `reranker plan --json` on a `Box` (fake nvidia-smi first on PATH, an offline HF
cache in tmp), where GPU detection and visibility are part of what is tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.nvidia import Box, build_hf_cache, cached_models, inventory_gpus, local_model_dir, plan_on

from reranker_template.errors import PlanError
from reranker_template.facts.gpus import Gpu
from reranker_template.facts.model import ModelInfo, ModelSource, inspect_model
from reranker_template.plan.contract import Plan
from reranker_template.plan.user_args import UserArgs


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    return cached_models(tmp_path_factory.mktemp("hf") / "hub")


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)


def flags(plan: Plan) -> UserArgs:
    """The vLLM command, read the way vLLM reads it."""
    return UserArgs(plan.vllm_command)


def plan_error(gpus: str | tuple[Gpu, ...], model: ModelInfo, **env: str) -> str:
    with pytest.raises(PlanError) as caught:
        plan_on(gpus, model, **env)
    message = str(caught.value)
    assert "\n" not in message
    return message


# (inventory, model) -> (tensor parallel, data parallel) with USE_ALL_GPUS=true, or the start of the error.
FITS_ONE = {"0.6B", "4B", "bge", "jina"}
BOXES = {"1xT4": 1, "2xL4": 2, "3xA10": 3, "4xA100": 4, "8x4090": 8}
EXPECTED: dict[tuple[str, str], tuple[int, int] | str] = {}
for _inv, _n in BOXES.items():
    for _m in FITS_ONE:
        EXPECTED[(_inv, _m)] = (1, _n)
    EXPECTED[(_inv, "8B")] = (1, _n)
    EXPECTED[(_inv, "giant")] = "needs about 82.2 GiB on one GPU"
EXPECTED[("1xT4", "8B")] = "needs about 22.0 GiB on one GPU"  # 16 GB of bf16 weights on a 15 GiB card
EXPECTED[("4xA100", "giant")] = (2, 2)  # 70 GB weights + working memory exceed 80 GiB: TP 2, twice
EXPECTED[("8x4090", "giant")] = (4, 2)  # TP 4 fits 24 GiB cards; 8 GPUs make two engines


@pytest.mark.parametrize(("inventory", "model"), sorted(EXPECTED), ids=lambda v: v)
def test_use_all_gpus_layout(models: dict[str, ModelInfo], inventory: str, model: str) -> None:
    expected = EXPECTED[(inventory, model)]
    if isinstance(expected, str):
        message = plan_error(inventory, models[model])
        assert expected in message
        assert "It needs a GPU with at least" in message  # says what would work
        return
    plan = plan_on(inventory, models[model])
    tp, dp = expected
    assert (plan.tensor_parallel_size, plan.data_parallel_size) == (tp, dp)
    assert plan.gpu_count == len(plan.gpus) == BOXES[inventory]
    assert plan.gpus_used == tp * dp
    command = flags(plan)
    assert command.value("--tensor-parallel-size") == (str(tp) if tp > 1 else None)
    assert command.value("--data-parallel-size") == (str(dp) if dp > 1 else None)
    assert command.has("--tensor-parallel-size") == (tp > 1)
    assert command.has("--data-parallel-size") == (dp > 1)
    # Turing has no bf16; every later card keeps vLLM's default dtype.
    assert command.value("--dtype") == ("float16" if inventory == "1xT4" else None)
    reasons = " ".join(plan.reasons)
    assert "GiB per GPU" in reasons
    if dp > 1 and tp == 1:
        assert "data parallel, one engine per GPU" in reasons


@pytest.mark.slow  # runs the fake nvidia-smi
def test_reranker_plan_json_on_a_box(box: Box) -> None:
    """End to end: nvidia-smi's inventory and the cached model's size reach the layout, and an impossible one
    is one line on stderr with exit status 2."""
    box.gpus("4xA100")
    box.model("giant")
    plan = box.plan()
    assert (plan["gpu_count"], plan["gpus_used"]) == (4, 4)
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (2, 2)
    box.gpus("1xT4")
    box.model("8B")
    assert "needs about 22.0 GiB on one GPU" in box.plan_error()


# (id, inventory, model, settings, the P2P matrix was read, custom all-reduce disabled, a reason says)
ALL_REDUCE = [
    ("4090s report no P2P", "8x4090", "giant", {}, True, True, "peer-to-peer"),
    ("A100s report P2P", "4xA100", "giant", {}, True, False, "custom all-reduce kept"),
    ("L4s report no P2P", "2xL4", "4B", {"PARALLEL_MODE": "tp"}, True, True, "GPU0 and GPU1"),
    ("no matrix: L4s are PCIe-only cards", "2xL4", "4B", {"PARALLEL_MODE": "tp"}, False, True, "without reliable P2P"),
    ("no matrix: A100s are trusted", "4xA100", "4B", {"PARALLEL_MODE": "tp"}, False, False, "normally have P2P"),
    ("user TP on L4s", "2xL4", "4B", {"VLLM_ARGS": "--tensor-parallel-size=2"}, True, True, "peer-to-peer"),
    ("data parallel needs no P2P", "8x4090", "0.6B", {}, True, False, "data parallel"),
]


@pytest.mark.parametrize(
    ("inventory", "model", "env", "matrix", "disabled", "reason"),
    [case[1:] for case in ALL_REDUCE],
    ids=[case[0] for case in ALL_REDUCE],
)
def test_custom_all_reduce_is_disabled_only_without_p2p(
    models: dict[str, ModelInfo],
    inventory: str,
    model: str,
    env: dict[str, str],
    matrix: bool,
    disabled: bool,
    reason: str,
) -> None:
    plan = plan_on(inventory_gpus(inventory, p2p_matrix=matrix), models[model], **env)
    assert flags(plan).has("--disable-custom-all-reduce") is disabled
    assert any(reason in r for r in plan.reasons), plan.reasons


# (id, inventory, model, settings) -> (tensor parallel, data parallel, GPUs used, extra flags, a reason says)
Chosen = tuple[int, int, int, dict[str, str], str]
CHOSEN: list[tuple[str, str, str, dict[str, str], Chosen]] = [
    ("USE_ALL_GPUS=false", "4xA100", "4B", {"USE_ALL_GPUS": "false"}, (1, 1, 1, {}, "USE_ALL_GPUS=false")),
    ("USE_ALL_GPUS=0 on a T4", "1xT4", "0.6B", {"USE_ALL_GPUS": "0"}, (1, 1, 1, {"--dtype": "float16"}, "one GPU")),
    (
        "USE_ALL_GPUS=false ignores PARALLEL_MODE",
        "4xA100",
        "4B",
        {"USE_ALL_GPUS": "false", "PARALLEL_MODE": "tp"},
        (1, 1, 1, {}, "PARALLEL_MODE=tp has no effect with one GPU"),
    ),
    (
        "PARALLEL_MODE=tp on L4s",
        "2xL4",
        "4B",
        {"PARALLEL_MODE": "tp"},
        (2, 1, 2, {"--tensor-parallel-size": "2"}, "faster for small models"),
    ),
    (
        "PARALLEL_MODE=tp on A100s",
        "4xA100",
        "0.6B",
        {"PARALLEL_MODE": "tp"},
        (4, 1, 4, {"--tensor-parallel-size": "4"}, "PARALLEL_MODE=tp"),
    ),
    (
        "PARALLEL_MODE=dp",
        "4xA100",
        "8B",
        {"PARALLEL_MODE": "dp"},
        (1, 4, 4, {"--data-parallel-size": "4"}, "PARALLEL_MODE=dp"),
    ),
    (
        "PARALLEL_MODE=auto",
        "2xL4",
        "4B",
        {"PARALLEL_MODE": "auto"},
        (1, 2, 2, {"--data-parallel-size": "2"}, "vLLM #1873"),
    ),
    (
        "user data parallel",
        "4xA100",
        "0.6B",
        {"VLLM_ARGS": "--data-parallel-size 4"},
        (1, 4, 4, {}, "VLLM_ARGS sets the parallel layout"),
    ),
    (
        "user TP and PP",
        "4xA100",
        "4B",
        {"VLLM_ARGS": "-tp 2 --pipeline-parallel-size 2"},
        (2, 1, 4, {}, "--pipeline-parallel-size 2"),
    ),
]


@pytest.mark.parametrize(
    ("inventory", "model", "env", "expected"), [case[1:] for case in CHOSEN], ids=[case[0] for case in CHOSEN]
)
def test_settings_choose_the_layout(
    models: dict[str, ModelInfo], inventory: str, model: str, env: dict[str, str], expected: Chosen
) -> None:
    tp, dp, used, extra, reason = expected
    plan = plan_on(inventory, models[model], **env)
    assert (plan.tensor_parallel_size, plan.data_parallel_size, plan.gpus_used) == (tp, dp, used)
    command = flags(plan)
    for option, value in extra.items():
        assert command.value(option) == value
    if not extra.get("--data-parallel-size"):
        assert plan.vllm_command.count("--data-parallel-size") == env.get("VLLM_ARGS", "").count("--data-parallel-size")
    assert any(reason in r for r in plan.reasons), plan.reasons


@pytest.mark.parametrize(
    "spelling", ["-tp 2", "--tensor-parallel-size=2", "--tensor-parallel-size 2", "--tensor_parallel_size 2"]
)
def test_vllm_args_tensor_parallel_is_respected(models: dict[str, ModelInfo], spelling: str) -> None:
    plan = plan_on("4xA100", models["4B"], VLLM_ARGS=spelling)
    assert (plan.tensor_parallel_size, plan.data_parallel_size, plan.gpus_used) == (2, 1, 2)
    command = plan.vllm_command
    assert command[-len(spelling.split()) :] == tuple(spelling.split())  # appended as given
    # We add no parallel size of our own, in any spelling.
    ours = command[: len(command) - len(spelling.split())]
    assert not any(a.startswith(("--tensor-parallel", "--tensor_parallel", "-tp", "--data-parallel")) for a in ours)
    assert any("VLLM_ARGS sets the parallel layout" in r for r in plan.reasons)


# (id, inventory, model, settings, what the one-line error says)
REFUSED = [
    ("one GPU too small", "8x4090", "giant", {"USE_ALL_GPUS": "false"}, ("USE_ALL_GPUS=true", "tensor parallelism 4")),
    (
        "TP does not divide the heads",
        "3xA10",
        "4B",
        {"PARALLEL_MODE": "tp"},
        ("3 does not divide its 32 attention heads", "CUDA_VISIBLE_DEVICES=0,1", "PARALLEL_MODE=auto"),
    ),
    ("TP does not divide the KV heads", "3xA10", "jina", {"PARALLEL_MODE": "tp"}, ("KV heads",)),
    (
        "DP with a model that fits no GPU",
        "8x4090",
        "giant",
        {"PARALLEL_MODE": "dp"},
        ("PARALLEL_MODE=dp", "PARALLEL_MODE=auto would run tensor parallelism 4 x data parallelism 2"),
    ),
    (
        "user asks for more GPUs than visible",
        "2xL4",
        "0.6B",
        {"VLLM_ARGS": "--data-parallel-size 4"},
        ("needs 4 GPUs, but 2 are visible",),
    ),
    (
        "user TP does not divide the heads",
        "3xA10",
        "4B",
        {"VLLM_ARGS": "-tp 3"},
        ("3 does not divide its 32 attention heads", "sizes that work here: 2"),
    ),
]


@pytest.mark.parametrize(
    ("inventory", "model", "env", "says"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_a_layout_that_cannot_work_is_refused_saying_what_would(
    models: dict[str, ModelInfo], inventory: str, model: str, env: dict[str, str], says: tuple[str, ...]
) -> None:
    message = plan_error(inventory, models[model], **env)
    for part in says:
        assert part in message


def test_too_few_visible_gpus_for_a_big_model(models: dict[str, ModelInfo]) -> None:
    two = tuple(g for g in inventory_gpus("8x4090") if g.index in (1, 3))  # CUDA_VISIBLE_DEVICES=1,3
    assert "4 GPUs like these with tensor parallelism 4" in plan_error(two, models["giant"])


def test_idle_gpus_are_named_and_not_counted_as_used(models: dict[str, ModelInfo]) -> None:
    five = inventory_gpus("8x4090")[:5]
    plan = plan_on(five, models["giant"])
    assert (plan.gpu_count, plan.gpus_used, plan.tensor_parallel_size, plan.data_parallel_size) == (5, 4, 4, 1)
    assert any("GPU 4 stay idle" in r for r in plan.reasons)


def test_no_gpu_means_cpu_mode(models: dict[str, ModelInfo]) -> None:
    plan = plan_on(None, models["0.6B"])
    assert plan.device == "cpu"
    assert (plan.gpu_count, plan.gpus_used, plan.tensor_parallel_size, plan.data_parallel_size) == (0, 0, 1, 1)


def test_unknown_model_size_is_assumed_to_fit_and_says_the_way_out() -> None:
    unknown = ModelInfo(name="someone/unknown-reranker", source=ModelSource.UNKNOWN, note="the hub did not answer")
    plan = plan_on("4xA100", unknown)
    assert (plan.tensor_parallel_size, plan.data_parallel_size) == (1, 4)
    assert any("PARALLEL_MODE=tp" in r and "assuming the model fits" in r for r in plan.reasons)


def test_cached_config_without_weights_is_estimated_from_shapes(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    model = inspect_model(
        build_hf_cache(hub, "8B", config_only=True),
        is_local=False,
        env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"},
    )
    message = plan_error("1xT4", model)  # 8.2B parameters in bf16 still do not fit a T4
    assert "estimated from config.json" in message


# --- end to end: what the box reports reaches the plan --------------------------------------------------


@pytest.mark.slow  # runs the fake nvidia-smi
def test_cuda_visible_devices_limits_and_names_the_gpus(box: Box) -> None:
    box.gpus("4xA100")
    box.model("4B")
    box.env(CUDA_VISIBLE_DEVICES="1,3")
    plan = box.plan()
    assert (plan["gpu_count"], plan["gpus_used"]) == (2, 2)
    assert [g["index"] for g in plan["gpus"]] == [1, 3]
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 2)
    assert any("GPU 1,3)" in r for r in plan["reasons"])


@pytest.mark.slow  # runs the fake nvidia-smi
def test_gpu_count_is_only_a_fallback(box: Box) -> None:
    box.model("4B")
    box.env(GPU_COUNT="2")  # no nvidia-smi on PATH
    plan = box.plan()
    assert plan["gpu_count"] == 2
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 2)
    assert any("GPU memory unknown" in r for r in plan["reasons"])
    box.gpus("1xT4")  # once nvidia-smi answers, GPU_COUNT is ignored
    assert box.plan()["gpu_count"] == 1


@pytest.mark.slow  # runs the fake nvidia-smi
def test_offline_and_uncached_model_is_planned_conservatively(box: Box) -> None:
    box.gpus("4xA100")
    box.env(MODEL_NAME="someone/unknown-reranker")
    plan = box.plan()
    assert plan["model_source"] == "unknown"
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (1, 4)
    reasons = " ".join(plan["reasons"])
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in reasons
    assert "PARALLEL_MODE=tp" in reasons  # tells the user the way out if the guess is wrong


@pytest.mark.slow  # runs the fake nvidia-smi
def test_local_model_directory(box: Box, tmp_path: Path) -> None:
    box.gpus("8x4090")
    directory = local_model_dir(tmp_path, "giant")
    box.env(MODEL_NAME=str(directory))
    plan = box.plan()
    assert (plan["tensor_parallel_size"], plan["data_parallel_size"]) == (4, 2)
    assert plan["model_source"] == "local"
