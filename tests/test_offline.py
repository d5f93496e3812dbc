"""Offline scoring: the server's vLLM flags become the LLM's engine arguments, and the scores match the server's."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from support.stack_runner import RERANKER, minilm_dir

from reranker_template.cli.offline import REEXEC_MARK, preload_env
from reranker_template.client.offline import options_from_plan, plan_for, rank, server_argv
from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.build import make_plan
from reranker_template.plan.contract import Plan
from reranker_template.settings import BUNDLED_MODEL, load_settings

QUERY = "What are the health benefits of green tea?"
DOCS = [
    "Basketball is one of the most popular sports in the United States.",
    "Green tea contains antioxidants called catechins that may help reduce inflammation.",
    "The price of coffee has risen by 20% this year.",
    "Studies show that drinking green tea regularly can improve brain function.",
]
LONG_DOC = "Green tea is a drink. " + "The weather was mild and the river ran past the old city. " * 60  # > 256 tokens

# A CPU machine with half precision in hardware and Intel OpenMP beside Python, serving a local cross-encoder.
CPU = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16", "avx512_fp16"})))
RUNTIME = Runtime(python="/usr/bin/python3", openmp_library="/lib/libiomp5.so")
CROSS_ENCODER = ModelInfo(
    name="/models/m",
    source="local",
    config={"architectures": ["BertForSequenceClassification"], "model_type": "bert", "max_position_embeddings": 512},
)


def user_plan(vllm_args: list[str] | None = None, **env: str) -> Plan:
    """The plan a user gets with these settings on that machine, built as `reranker plan` builds it."""
    settings = load_settings({"MODEL_NAME": "/models/m", "VLLM_ARGS": shlex.join(vllm_args or []), **env})
    return make_plan(settings, CPU, CROSS_ENCODER, RUNTIME)


def test_server_flags_become_the_same_engine_arguments(tmp_path: Path) -> None:
    template = tmp_path / "score.jinja"
    template.write_text("{{ messages }}")
    plan = user_plan(
        [
            "--served-model-name",
            "m",
            "--dtype",
            "bfloat16",
            "--max-model-len",
            "512",
            "--runner",
            "pooling",
            "--hf-overrides",
            '{"architectures": ["Qwen3ForSequenceClassification"]}',
            "--enable-prefix-caching",
            "--max_num_batched_tokens=1024",
            "--chat-template",
            str(template),
        ]
    )
    options = options_from_plan(plan)
    args = options.engine_args
    assert (args.model, args.dtype, args.max_model_len, args.runner) == ("/models/m", "bfloat16", 512, "pooling")
    assert args.hf_overrides == {"architectures": ["Qwen3ForSequenceClassification"]}
    assert args.enable_prefix_caching is True and args.max_num_batched_tokens == 1024
    assert options.chat_template == str(template)  # a front-end option: given to the LLM separately
    # the plan's environment for vLLM: Intel OpenMP, and both cores of this 2-core CPU computing
    assert options.env == {"LD_PRELOAD": "/lib/libiomp5.so", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    changed = options.changed()
    assert {"host", "port", "disable_uvicorn_access_log"}.isdisjoint(changed)  # server-only flags drop out
    assert changed["dtype"] == "bfloat16" and changed["max_model_len"] == 512


def test_long_documents_are_cut_as_the_gateway_cuts_them(tmp_path: Path) -> None:
    """The plan's truncation policy, applied offline: the fields the gateway adds to a request without any."""
    pair = options_from_plan(user_plan(["--max-model-len", "512"]))
    assert pair.request_defaults == {"truncate_prompt_tokens": -1}
    assert pair.score_kwargs() == {"tokenization_kwargs": {"truncate_prompt_tokens": -1}}

    template = tmp_path / "score.jinja"
    template.write_text("{{ messages }}")
    split = options_from_plan(user_plan(["--max-model-len", "2048", "--chat-template", str(template)]))
    assert split.request_defaults == {"max_tokens_per_query": 512, "max_tokens_per_doc": 2048 - 512 - 256}
    assert split.score_kwargs()["pooling_params"].extra_kwargs == split.request_defaults

    strict = options_from_plan(user_plan(["--max-model-len", "512"], TRUNCATE="false"))
    assert strict.request_defaults == {} and strict.score_kwargs() == {}


def test_a_plan_without_the_vllm_module_is_refused() -> None:
    broken = dataclasses.replace(user_plan(), vllm_command=("vllm", "serve", "/models/m"))
    with pytest.raises(ValueError, match="runs neither"):
        server_argv(broken)


def test_a_gpu_plans_vllm_serve_command_gives_the_same_server_arguments() -> None:
    """A GPU plan starts `vllm serve MODEL`; offline scoring reads its arguments with the model as --model."""
    cpu = user_plan(["--max-model-len", "512"])
    args = server_argv(cpu)
    gpu = dataclasses.replace(cpu, vllm_command=("python", "-m", "vllm.entrypoints.cli.main", "serve", *args[1:]))
    assert server_argv(gpu) == args


def test_rank_is_best_first_and_keeps_the_indices() -> None:
    assert rank([0.1, 0.9, 0.5]) == [(1, 0.9), (2, 0.5), (0, 0.1)]
    assert rank([0.1, 0.9, 0.5], top_n=2) == [(1, 0.9), (2, 0.5)]


def test_the_settings_of_the_server_reach_the_offline_engine(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "MODEL_NAME": str(minilm_dir()),
        "VLLM_ARGS": "--max-model-len 128",
        "HF_HUB_OFFLINE": "1",
        "PATH": os.environ["PATH"],
    }
    plan = plan_for(None, env)
    args = options_from_plan(plan).engine_args
    assert args.model == str(minilm_dir()) and args.max_model_len == 128
    dtype = plan.vllm_command[plan.vllm_command.index("--dtype") + 1]
    assert args.dtype == dtype  # our CPU plan's dtype, not vLLM's default "auto"


def test_with_no_model_offline_plans_the_bundled_cross_encoder_as_serve_does(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]}
    plan = plan_for(None, env)
    assert plan.served_model_name == BUNDLED_MODEL and plan.preset == "cross-encoder"
    assert Path(plan.model).is_dir() and (Path(plan.model) / "config.json").is_file()


def test_ld_preload_is_applied_by_restarting_once() -> None:
    wanted = {"LD_PRELOAD": "/v/lib/libiomp5.so"}
    env = preload_env(wanted, {"PATH": "/bin", "LD_PRELOAD": "/other.so"})
    assert env is not None and env["LD_PRELOAD"] == "/v/lib/libiomp5.so:/other.so" and env[REEXEC_MARK] == "1"
    assert preload_env(wanted, env) is None  # already restarted
    assert preload_env(wanted, {"LD_PRELOAD": "/x.so:/v/lib/libiomp5.so"}) is None  # already preloaded
    assert preload_env({}, {"PATH": "/bin"}) is None


@pytest.mark.slow
def test_score_offline_builds_the_plan_once(tmp_path: Path) -> None:
    """Planning asks nvidia-smi (and the hub, for a hub model): `reranker score-offline` does it as often as
    `reranker plan` does, once, and hands that plan to vLLM. A VLLM_ARGS flag that vLLM does not know ends
    the command when vLLM reads the plan, before any model is loaded."""
    calls = tmp_path / "nvidia-smi-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "$*" >> "$NVIDIA_SMI_CALLS"\necho "no driver" >&2\nexit 9\n')  # a host without GPUs
    smi.chmod(0o755)
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "NVIDIA_SMI_CALLS": str(calls),
        "MODEL_NAME": str(minilm_dir()),
        "HF_HUB_OFFLINE": "1",
        "VLLM_ARGS": "--no-such-flag-for-this-test",
        REEXEC_MARK: "1",  # no LD_PRELOAD restart, which would plan again in the new process
    }
    planned = subprocess.run([RERANKER, "plan", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    per_plan = calls.read_text().splitlines()
    assert per_plan, "planning asks nvidia-smi for the GPUs"
    calls.unlink()
    offline = subprocess.run(
        [RERANKER, "score-offline", QUERY, *DOCS], env=env, capture_output=True, text=True, timeout=300
    )
    assert offline.returncode != 0 and "no-such-flag-for-this-test" in offline.stderr, offline.stderr[-2000:]
    assert calls.read_text().splitlines() == per_plan


@pytest.mark.vllm
def test_offline_scores_equal_the_servers(minilm_stack, vllm_cache_root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKER_", "VLLM_", "HF_"))}
    env.update(
        HOME=str(tmp_path),
        MODEL_NAME=str(minilm_dir()),
        HF_HUB_OFFLINE="1",
        VLLM_CACHE_ROOT=str(vllm_cache_root),
    )
    # The long document is cut to the model's 256 tokens (the gateway's default truncation, applied offline too).
    offline = subprocess.run(
        [RERANKER, "score-offline", QUERY, "--json"],
        input="\n".join([*DOCS, LONG_DOC]),
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    report = json.loads(offline.stdout)  # vLLM's logs went to stderr

    from reranker_template.client import RerankerClient

    server = RerankerClient(minilm_stack.gateway_url, minilm_stack.token).score(QUERY, DOCS).scores
    assert report["scores"][: len(DOCS)] == pytest.approx(server, abs=1e-3)
    assert -1 <= report["scores"][len(DOCS)] <= 1
    ranked = [row["index"] for row in report["results"] if row["index"] < len(DOCS)]
    assert ranked == sorted(range(len(DOCS)), key=lambda i: -server[i])
