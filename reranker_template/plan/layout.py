"""How many GPUs, and how: data parallel for models that fit one GPU, tensor parallel only when needed.

The rule (README, "Multi-GPU"):
- USE_ALL_GPUS=true (default): a model that fits one GPU with headroom runs one engine per GPU
  (`--data-parallel-size N`, one endpoint). Tensor parallelism only for a model that fits no single GPU:
  the smallest size that fits and that vLLM can split the attention (and KV) heads by, with data
  parallelism over the GPUs that remain.
- USE_ALL_GPUS=false: one GPU.
- PARALLEL_MODE=tp|dp forces tensor parallelism over all GPUs, or one engine per GPU.
- A parallel size in VLLM_ARGS (any spelling) is taken as given; we add none.
Why: tensor parallelism adds an all-reduce per layer, which costs small models more than it gives
(vLLM #1873), and on GPUs without P2P it can hang; data parallel engines share nothing.

Everything here is pure: the same inputs give the same layout, so `reranker plan` and the tests can
show every decision without a GPU. The memory estimate it checks against is memory.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from reranker_template.errors import PlanError
from reranker_template.facts.gpus import Gpu, p2p_between
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.flags import Flag
from reranker_template.plan.memory import MemoryNeed, memory_need, tp_problem, valid_tp_sizes
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import ParallelMode, Settings

# Below this compute capability (Turing: T4, RTX 20xx) GPUs have no bf16.
BF16_MIN_CAPABILITY = 8.0
# A parallel size in VLLM_ARGS (any spelling) means the user chose the layout.
_PARALLEL_SIZES = ("--tensor-parallel-size", "--data-parallel-size", "--pipeline-parallel-size")


@dataclass(frozen=True)
class Layout:
    """The chosen parallel sizes, the GPU flags that go with them, and why."""

    tensor_parallel_size: int
    data_parallel_size: int
    flags: tuple[Flag, ...] = ()
    reasons: tuple[str, ...] = ()
    gpus_used: int = 0  # GPUs the layout runs on (0 in CPU mode); fewer than visible when some stay idle


def describe_gpus(gpus: tuple[Gpu, ...]) -> str:
    """`4x A100-SXM4-80GB (80.0 GiB, compute capability 8.0; GPU 0,1,2,3)`."""
    names = sorted({g.short_name for g in gpus})
    which = ",".join(str(x.index) for x in gpus)
    if len(names) == 1:
        g = gpus[0]
        memory = f"{g.memory_gib:.1f} GiB" if g.memory_mib else "memory unknown"
        capability = f", compute capability {g.compute_capability:.1f}" if g.compute_capability else ""
        return f"{len(gpus)}x {names[0]} ({memory}{capability}; GPU {which})"
    return ", ".join(f"GPU{g.index} {g.short_name} ({g.memory_gib:.1f} GiB)" for g in gpus)


@dataclass(frozen=True)
class _Facts:
    """The inputs to the decision, with the derived numbers every branch needs."""

    gpus: tuple[Gpu, ...]
    model: ModelInfo
    need: MemoryNeed | None
    gpu_gib: float | None  # smallest GPU's memory; None when unknown

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def gpu(self) -> str:
        """`one T4 (15.0 GiB)`: the smallest GPU, for messages."""
        smallest = min(self.gpus, key=lambda g: g.memory_mib)
        return f"one {smallest.short_name} ({smallest.memory_gib:.1f} GiB)"

    def fits(self, tp: int) -> bool | None:
        if self.need is None or self.gpu_gib is None:
            return None
        return self.need.per_gpu_gib(tp) <= self.gpu_gib

    def per_gpu(self, tp: int = 1) -> str:
        return f"{self.need.per_gpu_gib(tp):.1f} GiB" if self.need else "an unknown amount"

    def smallest_fitting_tp(self, limit: int) -> int | None:
        for tp in valid_tp_sizes(self.model, limit):
            if self.fits(tp):
                return tp
        return None

    def what_would_work(self) -> str:
        """Layouts that would run, for error messages: a bigger GPU, or more GPUs like these."""
        if self.need is None or self.gpu_gib is None:
            return "check the model's size and the GPUs' memory"
        options = [f"a GPU with at least {self.need.per_gpu_gib(1):.1f} GiB"]
        tp = self.smallest_fitting_tp(64)
        if tp and tp > 1:
            options.append(f"{tp} GPUs like these with tensor parallelism {tp} ({self.per_gpu(tp)} each)")
        return " or ".join(options)


def _facts(gpus: tuple[Gpu, ...], model: ModelInfo) -> _Facts:
    memories = [g.memory_gib for g in gpus]
    gpu_gib = min(memories) if memories and all(memories) else None
    return _Facts(gpus=gpus, model=model, need=memory_need(model), gpu_gib=gpu_gib)


def _fit_reason(facts: _Facts, tp: int = 1) -> str:
    """The memory estimate and its verdict, in full, for `reasons`."""
    if facts.need is None:
        why = facts.model.note or f"{facts.model.name}'s weight size is unknown"
        return (
            f"{why}; assuming the model fits one GPU, as most rerankers do (if it does not, set PARALLEL_MODE=tp "
            "or VLLM_ARGS=--tensor-parallel-size N)"
        )
    if facts.gpu_gib is None:
        return (
            f"{facts.model.name} needs about {facts.need.explain(tp)}; "
            "GPU memory unknown (no nvidia-smi): assuming it fits"
        )
    verdict = "fits" if facts.fits(tp) else "does not fit"
    return f"{facts.model.name} needs about {facts.need.explain(tp)}: it {verdict} {facts.gpu}"


def _too_big(facts: _Facts) -> str:
    """`Qwen/Qwen3-Reranker-8B needs about 22.0 GiB on one GPU (15.3 GiB weights + ...)`, for errors."""
    assert facts.need is not None
    need = facts.need
    kv = f" + {need.kv_cache_gib:.1f} GiB KV cache" if need.kv_cache_gib else ""
    return (
        f"{facts.model.name} needs about {need.per_gpu_gib(1):.1f} GiB on one GPU "
        f"({need.weights_gib:.1f} GiB weights [{need.weight_source}]{kv} + working memory and headroom)"
    )


def _user_layout(facts: _Facts, user: UserArgs) -> tuple[int, int, list[str]]:
    sizes = {name: user.int_value(name) or 1 for name in _PARALLEL_SIZES}
    tp, dp, pp = sizes.values()
    given = " ".join(f"{name} {value}" for name, value in sizes.items() if user.has(name))
    if tp * dp * pp > facts.count:
        raise PlanError(
            f"VLLM_ARGS asks for {given}, which needs {tp * dp * pp} GPUs, but {facts.count} are visible "
            f"({describe_gpus(facts.gpus)}): lower the sizes so they multiply to at most {facts.count}, "
            "or remove them and let USE_ALL_GPUS choose."
        )
    problem = tp_problem(facts.model, tp)
    if problem:
        valid = [t for t in valid_tp_sizes(facts.model, facts.count) if t > 1]
        hint = (
            f"sizes that work here: {', '.join(map(str, valid))}" if valid else "no size above 1 works with these GPUs"
        )
        raise PlanError(f"VLLM_ARGS sets --tensor-parallel-size {tp}, but {problem} ({facts.model.name}); {hint}.")
    reasons = [f"VLLM_ARGS sets the parallel layout ({given}): taken as given, we add no parallel size"]
    if facts.fits(tp) is False:
        reasons.append(f"warning: {_fit_reason(facts, tp)}; vLLM will likely run out of memory")
    else:
        reasons.append(_fit_reason(facts, tp))
    return tp, dp, reasons


def _one_gpu(facts: _Facts, why: str) -> tuple[int, int, list[str]]:
    if facts.fits(1) is False:
        tp = facts.smallest_fitting_tp(facts.count)
        if tp:
            fix = (
                f"set USE_ALL_GPUS=true: tensor parallelism {tp} over {tp} of your {facts.count} GPUs fits "
                f"({facts.per_gpu(tp)} each)"
            )
        else:
            fix = f"it needs {facts.what_would_work()}"
        raise PlanError(f"USE_ALL_GPUS=false runs one GPU, but {_too_big(facts)}, more than {facts.gpu}: {fix}.")
    return 1, 1, [why, _fit_reason(facts)]


def _forced_dp(facts: _Facts) -> tuple[int, int, list[str]]:
    if facts.fits(1) is False:
        tp = facts.smallest_fitting_tp(facts.count)
        fix = (
            f"PARALLEL_MODE=auto would run tensor parallelism {tp} x data parallelism {facts.count // tp}"
            if tp
            else f"it needs {facts.what_would_work()}"
        )
        raise PlanError(
            f"PARALLEL_MODE=dp puts a whole copy of the model on each GPU, but {_too_big(facts)}, "
            f"more than {facts.gpu}: {fix}."
        )
    return 1, facts.count, [f"PARALLEL_MODE=dp: one engine per GPU on all {facts.count} GPUs", _fit_reason(facts)]


def _forced_tp(facts: _Facts) -> tuple[int, int, list[str]]:
    tp = facts.count
    problem = tp_problem(facts.model, tp)
    if problem:
        valid = [t for t in valid_tp_sizes(facts.model, facts.count) if t > 1]
        if valid:
            chosen = ",".join(str(g.index) for g in facts.gpus[: valid[-1]])
            fix = (
                f"expose {valid[-1]} GPUs (e.g. CUDA_VISIBLE_DEVICES={chosen}) for tensor parallelism {valid[-1]}, "
                "or use PARALLEL_MODE=auto"
            )
        else:
            fix = "use PARALLEL_MODE=auto"
        raise PlanError(f"PARALLEL_MODE=tp over all {tp} GPUs cannot work: {problem} ({facts.model.name}); {fix}.")
    if facts.fits(tp) is False:
        raise PlanError(
            f"PARALLEL_MODE=tp over all {tp} GPUs: {facts.model.name} would still need {facts.per_gpu(tp)} per GPU, "
            f"more than {facts.gpu}; it needs {facts.what_would_work()}."
        )
    reasons = [f"PARALLEL_MODE=tp: tensor parallelism over all {tp} GPUs, one engine"]
    if tp > 1 and facts.model.num_attention_heads is None:
        reasons.append(
            f"warning: {facts.model.name}'s attention heads are unknown, so we cannot check that {tp} divides them"
        )
    if facts.fits(1):
        reasons.append(
            "note: the model fits one GPU, where PARALLEL_MODE=auto would run data parallel (faster for small models)"
        )
    reasons.append(_fit_reason(facts, tp))
    return tp, 1, reasons


def _auto(facts: _Facts) -> tuple[int, int, list[str]]:
    n = facts.count
    if facts.fits(1) is not False:
        if n == 1:
            return 1, 1, ["one GPU: one engine", _fit_reason(facts)]
        return (
            1,
            n,
            [
                _fit_reason(facts),
                f"USE_ALL_GPUS=true and the model fits one GPU: data parallel, one engine per GPU on all {n} GPUs "
                "behind one endpoint (tensor parallelism would add communication that costs small models more than "
                "it gives, vLLM #1873)",
            ],
        )
    tp = facts.smallest_fitting_tp(n)
    if tp is None:
        assert facts.need is not None and facts.gpu_gib is not None  # fits(1) is False only when both are known
        if n == 1:
            why = f"more than {facts.gpu}"
        elif facts.need.per_gpu_gib(n) > facts.gpu_gib:
            why = f"more than {describe_gpus(facts.gpus)} hold even split over all {n} ({facts.per_gpu(n)} per GPU)"
        else:
            why = f"and no tensor-parallel size up to {n} both fits {describe_gpus(facts.gpus)} and divides its heads"
        raise PlanError(f"{_too_big(facts)}, {why}. It needs {facts.what_would_work()}.")
    dp = n // tp
    reasons = [
        _fit_reason(facts),
        f"tensor parallelism {tp}: the smallest size that fits ({facts.per_gpu(tp)} per GPU) and divides the "
        f"model's heads; data parallelism {dp} over the {n} GPUs",
    ]
    if n % tp:
        idle = [str(g.index) for g in facts.gpus[tp * dp :]]
        reasons.append(f"GPU {','.join(idle)} stay idle: {n} GPUs do not split into groups of {tp}")
    return tp, dp, reasons


def _gpu_flags(used: tuple[Gpu, ...], tp: int) -> tuple[list[Flag], list[str]]:
    flags: list[Flag] = []
    reasons: list[str] = []
    old = [g for g in used if 0 < g.compute_capability < BF16_MIN_CAPABILITY]
    if old:
        g = old[0]
        flags.append(
            Flag(
                "--dtype",
                "float16",
                f"{g.short_name} (compute capability {g.compute_capability:.1f}) has no bfloat16; "
                "float16 is its fast 16-bit type",
            )
        )
    if tp > 1:
        groups = [used[i : i + tp] for i in range(0, len(used), tp)]
        verdicts = [p2p_between(group) for group in groups if len(group) == tp]
        broken = [why for ok, why in verdicts if not ok]
        if broken:
            flags.append(
                Flag(
                    "--disable-custom-all-reduce",
                    None,
                    f"tensor parallelism without GPU peer-to-peer access: {broken[0]}; "
                    "vLLM's custom all-reduce can hang there",
                )
            )
        elif verdicts:
            reasons.append(f"custom all-reduce kept: {verdicts[0][1]}")
    return flags, reasons


def _choose_sizes(settings: Settings, facts: _Facts, user: UserArgs) -> tuple[int, int, list[str]]:
    """(tensor parallel, data parallel, why), by the module's rule, in its order."""
    if user.has(*_PARALLEL_SIZES):
        return _user_layout(facts, user)
    if not settings.use_all_gpus:
        ignored = (
            f" (PARALLEL_MODE={settings.parallel_mode} has no effect with one GPU)"
            if settings.parallel_mode is not ParallelMode.AUTO
            else ""
        )
        return _one_gpu(facts, f"USE_ALL_GPUS=false: one engine on one GPU (GPU {facts.gpus[0].index}){ignored}")
    if settings.parallel_mode is ParallelMode.DP:
        return _forced_dp(facts)
    if settings.parallel_mode is ParallelMode.TP:
        return _forced_tp(facts)
    return _auto(facts)


def _size_flags(tp: int, dp: int) -> list[Flag]:
    flags: list[Flag] = []
    if tp > 1:
        flags.append(Flag("--tensor-parallel-size", str(tp), f"the model is split over {tp} GPUs"))
    if dp > 1:
        engines = f"{dp} engines of {tp} GPUs each" if tp > 1 else f"{dp} engines, one per GPU"
        flags.append(Flag("--data-parallel-size", str(dp), f"{engines}, one endpoint with internal load balancing"))
    return flags


def plan_layout(settings: Settings, gpus: tuple[Gpu, ...], model: ModelInfo, user: UserArgs) -> Layout:
    """Choose tensor- and data-parallel sizes and GPU flags; raise PlanError for a layout that cannot work."""
    gpus = tuple(gpus)
    if not gpus:
        return Layout(1, 1, reasons=("no GPU found: CPU mode, one engine",))
    facts = _facts(gpus, model)
    tp, dp, why = _choose_sizes(settings, facts, user)
    user_set = user.has(*_PARALLEL_SIZES)
    pipeline = (user.int_value("--pipeline-parallel-size") or 1) if user_set else 1
    used = gpus[: tp * dp * pipeline]
    flags, gpu_reasons = _gpu_flags(used, tp)
    if not user_set:  # a size in VLLM_ARGS is taken as given: we add none of ours
        flags.extend(_size_flags(tp, dp))
    return Layout(
        tensor_parallel_size=tp,
        data_parallel_size=dp,
        flags=tuple(flags),
        reasons=(f"GPUs: {describe_gpus(gpus)}", *why, *gpu_reasons),
        gpus_used=len(used),
    )
