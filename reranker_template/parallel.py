"""How many GPUs, and how: data parallel for models that fit one GPU, tensor parallel only when needed."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .flags import Flag
from .gpus import Gpu
from .modelinfo import ModelInfo
from .vllm_args import UserArgs


@dataclass(frozen=True)
class Layout:
    tensor_parallel_size: int
    data_parallel_size: int
    flags: tuple[Flag, ...] = ()
    reasons: tuple[str, ...] = ()


def plan_layout(settings: Settings, gpus: tuple[Gpu, ...], model: ModelInfo, user: UserArgs) -> Layout:
    if not gpus:
        return Layout(1, 1, reasons=("no GPU found: CPU mode, one engine",))
    tp = user.int_value("--tensor-parallel-size")
    dp = user.int_value("--data-parallel-size")
    if tp or dp:
        return Layout(tp or 1, dp or 1, reasons=("VLLM_ARGS sets the parallel size; we add none",))
    if settings.use_all_gpus and len(gpus) > 1:
        n = str(len(gpus))
        return Layout(1, len(gpus), flags=(Flag("--data-parallel-size", n, f"USE_ALL_GPUS: one engine per GPU on {n} GPUs"),))
    return Layout(1, 1, reasons=("one GPU",))
