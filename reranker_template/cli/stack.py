"""`reranker serve`, `reranker boot`, `reranker plan` (the stack is imported when a command runs)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reranker_template.serve.preflight import Report
    from reranker_template.serve.stack import StackSpec


def cmd_serve(_args: argparse.Namespace) -> int:
    from reranker_template.serve import stack

    return stack.run(container=False)


def cmd_boot(_args: argparse.Namespace) -> int:
    from reranker_template.serve import stack

    return stack.run(container=True)


def cmd_plan(args: argparse.Namespace) -> int:
    from reranker_template.serve import stack

    spec = stack.prepare(container=False)  # what `reranker serve` would run (its default model included)
    settings, plan = spec.settings, spec.plan
    checks = _preflight(spec)
    if args.json:
        for line in checks.lines(advisory=("disk",)):
            print(f"preflight: {line}", file=sys.stderr)
        checks.raise_for_problem(advisory=("disk",))
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    print(f"model        {plan.model}  (served as {plan.served_model_name!r}; metadata: {plan.model_source})")
    print(f"preset       {plan.preset or 'none'}")
    if plan.license:
        note = "  NON-COMMERCIAL USE ONLY (model card)" if plan.non_commercial else ""
        print(f"license      {plan.license}{note}")
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
    print("preflight")
    for line in checks.lines(advisory=("disk",)):
        print(f"  {line}")
    checks.raise_for_problem(advisory=("disk",))  # the disk is checked again where the model is downloaded
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from reranker_template.paths import BAKED_MODELS_DIR
    from reranker_template.serve.baked import bake
    from reranker_template.serve.processes import setup_logging
    from reranker_template.settings import load_settings

    setup_logging()
    settings = load_settings({**os.environ, "MODEL_NAME": args.model})
    bake(args.model, args.revision, settings.hf_token, args.into or BAKED_MODELS_DIR)
    return 0


def _preflight(spec: StackSpec) -> Report:
    """serve/preflight.py's checks for the planned command (hub, architecture, tokenizer, disk)."""
    from reranker_template.serve.preflight import Target, preflight
    from reranker_template.settings import is_true

    offline = is_true(spec.env.get("HF_HUB_OFFLINE"))
    target = Target(token=spec.settings.hf_token)
    return preflight(spec.settings, spec.env, target, argv=spec.plan.vllm_command, offline=offline)


SETTINGS_HELP = """\
settings (environment):
  MODEL_NAME        hub id or local directory (default: `serve` the bundled cross-encoder
                    ms-marco-MiniLM-L-12-v2, `boot` Qwen/Qwen3-Reranker-0.6B)
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

    bake = subparsers.add_parser(
        "bake",
        help="download a model into the image being built (the Dockerfile's MODEL_NAME build argument)",
        description="Download MODEL (the files vLLM loads, no other formats) into a directory the stack "
        "serves it from at start, so a container of the image downloads nothing. The Dockerfile runs this "
        "when built with --build-arg MODEL_NAME=...; HF_TOKEN and HF_ENDPOINT are read from the environment.",
        epilog="example (what the Dockerfile runs):\n  reranker bake BAAI/bge-reranker-v2-m3\n\n"
        "a build of the image with it:\n"
        "  docker build --build-arg MODEL_NAME=BAAI/bge-reranker-v2-m3 -t me/reranker:bge .",
        formatter_class=formatter,
    )
    bake.add_argument("model", metavar="MODEL", help="a Hugging Face id, e.g. BAAI/bge-reranker-v2-m3")
    bake.add_argument("--revision", help="a branch, tag or commit (default: the default branch)")
    bake.add_argument(
        "--into", type=Path, metavar="DIR", help="the directory to bake into (default: /opt/reranker-models)"
    )
    bake.set_defaults(func=cmd_bake)
