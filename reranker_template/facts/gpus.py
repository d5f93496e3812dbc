"""GPU inventory from `nvidia-smi`: index, name, memory, compute capability and peer-to-peer links.

Which GPUs count:
- CUDA_VISIBLE_DEVICES (indices or UUIDs) is what CUDA, and so vLLM, will use: we keep those GPUs, in
  that order. nvidia-smi ignores it, so we must apply it ourselves.
- NVIDIA_VISIBLE_DEVICES is applied by the NVIDIA container runtime before anything in the container
  runs: inside a container nvidia-smi already lists only those GPUs (renumbered from 0), so filtering by
  its indices again would drop the wrong cards. We honour it by trusting nvidia-smi, except for UUIDs,
  which are stable and safe to match, and "none"/"void", which mean no GPU.
- Vast's GPU_COUNT is only a fallback when nvidia-smi cannot be asked (we then know the count but not
  the name, memory or links of the cards). No GPU found means CPU mode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

QUERY = "index,name,memory.total,compute_cap,uuid"

# Cards whose peer-to-peer access is absent or unreliable when `nvidia-smi topo -p2p r` cannot tell us:
# NVIDIA disables P2P on GeForce cards in the driver, and T4/L4 sit on PCIe without NVLink, where
# cloud hosts often lack P2P support in the chipset or hypervisor. Matched case-insensitively in the name.
NO_P2P_NAME_PATTERNS = ("geforce", "rtx", "titan", "t4", "l4", "a2", "a10g", "unknown")


class GpuSource(StrEnum):
    """Where the GPU inventory came from (shown by `reranker plan`)."""

    NVIDIA_SMI = "nvidia-smi"  # the full facts: name, memory, compute capability, P2P links
    GPU_COUNT = "GPU_COUNT"  # Vast's count only, when nvidia-smi cannot be asked
    NONE = "none"  # no GPU: CPU mode


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi's index (the host's numbering; CUDA renumbers visible GPUs from 0)
    name: str
    memory_mib: int  # 0 when unknown (GPU_COUNT fallback)
    compute_capability: float  # 0.0 when unknown
    uuid: str = ""
    # Indices of the GPUs this one can read from peer-to-peer (from `nvidia-smi topo -p2p r`);
    # None when the matrix could not be read.
    p2p_peers: tuple[int, ...] | None = None

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def short_name(self) -> str:
        return re.sub(r"^(NVIDIA|Tesla)\s+", "", self.name).strip() or self.name


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse `--query-gpu=index,name,memory.total,compute_cap,uuid --format=csv,noheader,nounits`."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            index = int(parts[0])
        except ValueError:
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
                index=index,
                name=parts[1],
                memory_mib=memory,
                compute_capability=capability,
                uuid=parts[4] if len(parts) > 4 else "",
            )
        )
    return gpus


def parse_p2p_matrix(output: str) -> dict[int, tuple[int, ...]]:
    """Parse `nvidia-smi topo -p2p r`: for each GPU index, the indices it reads from with status OK.

    The matrix has a header row `GPU0 GPU1 ...` and one row per GPU; the legend below it is ignored.
    """
    columns: list[int] = []
    peers: dict[int, tuple[int, ...]] = {}
    for line in output.splitlines():
        cells = line.split()
        if not cells:
            continue
        if all(re.fullmatch(r"GPU\d+", c) for c in cells):
            columns = [int(c[3:]) for c in cells]
            continue
        if columns and re.fullmatch(r"GPU\d+", cells[0]) and len(cells) - 1 == len(columns):
            row = int(cells[0][3:])
            peers[row] = tuple(col for col, status in zip(columns, cells[1:], strict=True) if status == "OK")
    return peers


def attach_p2p(gpus: Sequence[Gpu], peers: Mapping[int, tuple[int, ...]]) -> list[Gpu]:
    if not peers:
        return list(gpus)
    return [replace(g, p2p_peers=peers.get(g.index, ())) for g in gpus]


def filter_visible(gpus: list[Gpu], env: Mapping[str, str]) -> list[Gpu]:
    """Keep the GPUs CUDA_VISIBLE_DEVICES allows, in the order it lists them (see the module docstring)."""
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        return _select(gpus, raw, by_index=True)
    raw = env.get("NVIDIA_VISIBLE_DEVICES")
    if raw is not None:
        items = [p.strip() for p in raw.split(",") if p.strip()]
        if raw.strip().lower() in ("", "none", "void"):
            return []
        if items and all(i.startswith(("GPU-", "MIG-")) for i in items):
            return _select(gpus, raw, by_index=False)
    return gpus


def _select(gpus: list[Gpu], raw: str, *, by_index: bool) -> list[Gpu]:
    raw = raw.strip()
    if raw.lower() == "all":
        return gpus
    if raw == "" or raw.lower() in ("none", "void", "-1", "nodevfiles"):
        return []
    selected: list[Gpu] = []
    for item in (part.strip() for part in raw.split(",")):
        if by_index and item.startswith("-"):
            break  # CUDA stops at the first invalid entry
        match = next(
            (
                g
                for g in gpus
                if (by_index and str(g.index) == item) or (g.uuid and g.uuid.startswith(item) and len(item) > 4)
            ),
            None,
        )
        if match is None and by_index:
            break  # CUDA ignores this entry and every one after it
        if match is not None and match not in selected:
            selected.append(match)
    return selected


def p2p_between(gpus: Iterable[Gpu]) -> tuple[bool, str]:
    """(whether every pair of these GPUs has peer-to-peer access, how we know)."""
    group = list(gpus)
    if len(group) < 2:
        return True, "a single GPU needs no peer-to-peer link"
    if all(g.p2p_peers is not None for g in group):
        for a in group:
            for b in group:
                if a is not b and b.index not in (a.p2p_peers or ()):
                    return False, f"nvidia-smi topo -p2p r reports no P2P between GPU{a.index} and GPU{b.index}"
        return True, "nvidia-smi topo -p2p r reports P2P between all of them"
    for g in group:
        lowered = g.name.lower()
        for pattern in NO_P2P_NAME_PATTERNS:
            if re.search(rf"(^|[^a-z0-9]){re.escape(pattern)}($|[^a-z0-9])", lowered):
                return (
                    False,
                    f"{g.name} is a card without reliable P2P (consumer or PCIe-only) "
                    "and the P2P matrix could not be read",
                )
    return True, "no P2P matrix, and these are data-centre cards that normally have P2P"


def _run(args: list[str], timeout: float, env: Mapping[str, str] | None) -> str | None:
    exe = shutil.which("nvidia-smi", path=None if env is None else env.get("PATH"))
    if exe is None:
        return None
    try:
        result = subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=None if env is None else dict(env),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout


def query_nvidia_smi(timeout: float = 15.0, env: Mapping[str, str] | None = None) -> str | None:
    return _run([f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], timeout, env)


def query_p2p(timeout: float = 15.0, env: Mapping[str, str] | None = None) -> str | None:
    return _run(["topo", "-p2p", "r"], timeout, env)


def detect_gpus(env: Mapping[str, str], gpu_count_hint: int | None = None) -> tuple[list[Gpu], GpuSource]:
    """(visible GPUs, where the answer came from)."""
    # nvidia-smi is found and run with the environment we were given (its PATH), not the process's.
    output = query_nvidia_smi(env=env)
    if output is not None:
        gpus = filter_visible(parse_nvidia_smi(output), env)
        if len(gpus) > 1:
            gpus = attach_p2p(gpus, parse_p2p_matrix(query_p2p(env=env) or ""))
        return gpus, GpuSource.NVIDIA_SMI
    if gpu_count_hint:
        return [
            Gpu(index=i, name="unknown GPU", memory_mib=0, compute_capability=0.0) for i in range(gpu_count_hint)
        ], GpuSource.GPU_COUNT
    return [], GpuSource.NONE
