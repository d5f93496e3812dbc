"""GPU inventory from `nvidia-smi`, honouring CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES.

Vast's GPU_COUNT is only a fallback when nvidia-smi cannot be asked (we then know the count but not the
model or memory of the cards). No GPU found means CPU mode.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping

QUERY = "index,name,memory.total,compute_cap,uuid"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int  # 0 when unknown (GPU_COUNT fallback)
    compute_capability: float  # 0.0 when unknown
    uuid: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024


def parse_nvidia_smi(output: str) -> list[Gpu]:
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            memory = int(float(parts[2]))
        except ValueError:
            memory = 0
        try:
            capability = float(parts[3])
        except ValueError:
            capability = 0.0
        gpus.append(
            Gpu(
                index=int(parts[0]),
                name=parts[1],
                memory_mib=memory,
                compute_capability=capability,
                uuid=parts[4] if len(parts) > 4 else "",
            )
        )
    return gpus


def filter_visible(gpus: list[Gpu], env: Mapping[str, str]) -> list[Gpu]:
    """Keep the GPUs CUDA_VISIBLE_DEVICES (or NVIDIA_VISIBLE_DEVICES) allows, in the order it lists them."""
    for variable in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        raw = env.get(variable)
        if raw is None:
            continue
        raw = raw.strip()
        if raw.lower() == "all":
            return gpus
        if raw == "" or raw.lower() in ("none", "void", "-1"):
            return []
        selected = []
        for item in (part.strip() for part in raw.split(",")):
            match = next((g for g in gpus if str(g.index) == item or (g.uuid and g.uuid == item)), None)
            if match is not None and match not in selected:
                selected.append(match)
        return selected
    return gpus


def query_nvidia_smi(timeout: float = 15.0) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        result = subprocess.run(
            [exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout


def detect_gpus(env: Mapping[str, str], gpu_count_hint: int | None = None) -> tuple[list[Gpu], str]:
    """(GPUs, where the answer came from)."""
    output = query_nvidia_smi()
    if output is not None:
        return filter_visible(parse_nvidia_smi(output), env), "nvidia-smi"
    if gpu_count_hint:
        return [Gpu(index=i, name="unknown GPU", memory_mib=0, compute_capability=0.0) for i in range(gpu_count_hint)], "GPU_COUNT"
    return [], "none"
