"""`reranker serve`, `reranker boot`, `reranker plan` (the stack is imported when a command runs)."""

from __future__ import annotations

import argparse
import json
import os
import shlex


def cmd_serve(_args: argparse.Namespace) -> int:
    from reranker_template.serve import stack

    return stack.run(container=False)


def cmd_boot(_args: argparse.Namespace) -> int:
    from reranker_template.serve import stack

    return stack.run(container=True)


def cmd_plan(args: argparse.Namespace) -> int:
    from reranker_template.serve import stack
    from reranker_template.settings import load_settings

    settings = load_settings()
    plan = stack.build_plan(settings, dict(os.environ))
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    print(f"model        {plan.model}  (served as {plan.served_model_name!r}; metadata: {plan.model_source})")
    print(f"preset       {plan.preset or 'none'}")
    gpus = f"{plan.gpu_count} GPU(s)"
    if plan.gpus_used != plan.gpu_count:
        gpus = f"{plan.gpus_used} of {gpus}"
    print(
        f"device       {plan.device}, {gpus}, "
        f"tensor parallel {plan.tensor_parallel_size} x data parallel {plan.data_parallel_size}"
    )
    print(f"ports        gateway {settings.gateway_host}:{plan.gateway_port} (public), vLLM 127.0.0.1:{plan.vllm_port}")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.vllm_env.items())
    print("command      " + (env + " " if env else "") + shlex.join(plan.vllm_command))
    print("why")
    for reason in plan.reasons:
        print(f"  - {reason}")
    return 0


SETTINGS_HELP = """\
settings (environment):
  MODEL_NAME        hub id or local directory (default Qwen/Qwen3-Reranker-0.6B)
  VLLM_ARGS         extra vLLM flags; yours always win over ours
  USE_ALL_GPUS      true (default): every GPU, the fast layout; false: one GPU
  GATEWAY_PORT      public port of the gateway (default 8000)
  VLLM_PORT         loopback port of vLLM (default 18000)
  see README.md for the full table
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    serve = subparsers.add_parser(
        "serve",
        help="run the whole stack on this machine, in the foreground (what `make run` does)",
        description="Run vLLM and the gateway under supervisord, in the foreground, with user-writable paths "
        "(state and logs under ~/.local/state/reranker). Ctrl-C stops every process it started.",
        epilog="example:\n  MODEL_NAME=/models/all-MiniLM-L6-v2 reranker serve\n\n" + SETTINGS_HELP,
        formatter_class=formatter,
    )
    serve.set_defaults(func=cmd_serve)

    boot = subparsers.add_parser(
        "boot",
        help="the container entrypoint: the same stack with container paths",
        description="The Docker image's ENTRYPOINT. Logs go to /var/log/portal/<service>.log as Vast tooling "
        "expects; state and caches live under /workspace when it exists. Fit to run as PID 1.",
        epilog=SETTINGS_HELP,
        formatter_class=formatter,
    )
    boot.set_defaults(func=cmd_boot)

    plan = subparsers.add_parser(
        "plan",
        help="print exactly what would run, and why, without starting anything",
        description="Detect the GPUs, read the model's metadata (no weights are downloaded), apply the preset "
        "and the parallel layout, and print the vLLM command with one reason per flag.",
        epilog="examples:\n  MODEL_NAME=Qwen/Qwen3-Reranker-4B reranker plan\n"
        "  USE_ALL_GPUS=false reranker plan --json | jq .vllm_command",
        formatter_class=formatter,
    )
    plan.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output (keys: model, preset, device, gpu_count, gpus_used, tensor_parallel_size, "
        "data_parallel_size, vllm_command, reasons, ...)",
    )
    plan.set_defaults(func=cmd_plan)
