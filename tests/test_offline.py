"""Offline scoring: the server's vLLM flags become the LLM's engine arguments, and the scores match the server's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.stack_runner import RERANKER, minilm_dir

from reranker_template.cli.offline import REEXEC_MARK, preload_env
from reranker_template.client.offline import options_from_plan, plan_for, server_argv
from reranker_template.plan.build import VLLM_MODULE, Plan

QUERY = "What are the health benefits of green tea?"
DOCS = [
    "Basketball is one of the most popular sports in the United States.",
    "Green tea contains antioxidants called catechins that may help reduce inflammation.",
    "The price of coffee has risen by 20% this year.",
    "Studies show that drinking green tea regularly can improve brain function.",
]
LONG_DOC = "Green tea is a drink. " + "The weather was mild and the river ran past the old city. " * 60  # > 256 tokens


def make_plan(args: list[str], env: dict[str, str] | None = None) -> Plan:
    command = (
        "/usr/bin/python3",
        "-m",
        VLLM_MODULE,
        "--model",
        "/models/m",
        "--host",
        "127.0.0.1",
        "--port",
        "18000",
        *args,
    )
    return Plan(
        model="/models/m",
        served_model_name="m",
        preset=None,
        device="cpu",
        gpu_count=0,
        tensor_parallel_size=1,
        data_parallel_size=1,
        vllm_command=command,
        gateway_port=8000,
        vllm_port=18000,
        reasons=(),
        vllm_env=env or {},
    )


def test_server_flags_become_the_same_engine_arguments(tmp_path: Path) -> None:
    template = tmp_path / "score.jinja"
    template.write_text("{{ messages }}")
    plan = make_plan(
        [
            "--served-model-name",
            "m",
            "--disable-uvicorn-access-log",
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
        ],
        env={"LD_PRELOAD": "/lib/libiomp5.so", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    options = options_from_plan(plan)
    args = options.engine_args
    assert (args.model, args.dtype, args.max_model_len, args.runner) == ("/models/m", "bfloat16", 512, "pooling")
    assert args.hf_overrides == {"architectures": ["Qwen3ForSequenceClassification"]}
    assert args.enable_prefix_caching is True and args.max_num_batched_tokens == 1024
    assert options.chat_template == str(template)  # a front-end option: given to the LLM separately
    assert options.env == {"LD_PRELOAD": "/lib/libiomp5.so", "VLLM_CPU_KVCACHE_SPACE": "1"}
    changed = options.changed()
    assert {"host", "port", "disable_uvicorn_access_log"}.isdisjoint(changed)  # server-only flags drop out
    assert changed["dtype"] == "bfloat16" and changed["max_model_len"] == 512


def test_long_documents_are_cut_as_the_gateway_cuts_them(tmp_path: Path) -> None:
    from reranker_template.settings import load_settings

    settings = load_settings({"MODEL_NAME": "/models/m"})
    pair = options_from_plan(make_plan(["--max-model-len", "512"]), settings)
    assert pair.request_defaults == {"truncate_prompt_tokens": -1}
    assert pair.score_kwargs() == {"tokenization_kwargs": {"truncate_prompt_tokens": -1}}

    template = tmp_path / "score.jinja"
    template.write_text("{{ messages }}")
    split = options_from_plan(make_plan(["--max-model-len", "2048", "--chat-template", str(template)]), settings)
    assert split.request_defaults == {"max_tokens_per_query": 512, "max_tokens_per_doc": 2048 - 512 - 256}
    assert split.score_kwargs()["pooling_params"].extra_kwargs == split.request_defaults

    strict = options_from_plan(
        make_plan(["--max-model-len", "512"]), load_settings({"MODEL_NAME": "/models/m", "TRUNCATE": "false"})
    )
    assert strict.request_defaults == {} and strict.score_kwargs() == {}


def test_a_plan_without_the_vllm_module_is_refused() -> None:
    plan = make_plan([])
    broken = Plan(**{**plan.__dict__, "vllm_command": ("vllm", "serve", "/models/m")})
    with pytest.raises(ValueError, match=VLLM_MODULE):
        server_argv(broken)


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


def test_ld_preload_is_applied_by_restarting_once() -> None:
    wanted = {"LD_PRELOAD": "/v/lib/libiomp5.so"}
    env = preload_env(wanted, {"PATH": "/bin", "LD_PRELOAD": "/other.so"})
    assert env is not None and env["LD_PRELOAD"] == "/v/lib/libiomp5.so:/other.so" and env[REEXEC_MARK] == "1"
    assert preload_env(wanted, env) is None  # already restarted
    assert preload_env(wanted, {"LD_PRELOAD": "/x.so:/v/lib/libiomp5.so"}) is None  # already preloaded
    assert preload_env({}, {"PATH": "/bin"}) is None


@pytest.mark.vllm
def test_offline_scores_equal_the_servers(minilm_stack, vllm_cache_root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKER_", "VLLM_", "HF_"))}
    env.update(
        HOME=str(tmp_path),
        MODEL_NAME=str(minilm_dir()),
        HF_HUB_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
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
