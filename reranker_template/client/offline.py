"""Offline scoring: the model in this process with `vllm.LLM`, no server, the same flags as `reranker serve`.

Why the same flags matter: a reranker's scores depend on them (dtype, the Qwen3 overrides and score
template, max length). So we do not keep a second list of options: the plan that `reranker serve`
would run is built from the same settings, and its vLLM command line is parsed by vLLM's own server
argument parser into the EngineArgs the server would use. Server-only options (host, port, access
log) have no EngineArgs field and drop out by themselves; --chat-template (a front-end option) is
passed to the LLM explicitly.

    from reranker_template.client.offline import OfflineReranker, score
    score("what is deep learning?", ["Deep learning uses neural networks", "I like pizza"])  # load, score, unload
    reranker = OfflineReranker()  # keep it: reranker.rerank(query, docs, top_n=5) as often as you like

This is the only module that imports vLLM (lazily, inside the functions that need it): the stack's own
processes never do, so they start fast and cannot break on a vLLM import.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reranker_template.plan.contract import Plan
from reranker_template.plan.frontend import server_args
from reranker_template.plan.truncation import apply_default_truncation


@dataclass(frozen=True)
class OfflineOptions:
    """What `vllm.LLM(...)` gets, derived from a Plan."""

    engine_args: Any  # vllm.engine.arg_utils.EngineArgs, exactly as the server would build it
    chat_template: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # the plan's vLLM environment (LD_PRELOAD, presets' variables)
    # The truncation fields the gateway adds to a request that sets none (plan.truncation), so that a long
    # document is cut here exactly as it is behind the gateway.
    request_defaults: dict[str, Any] = field(default_factory=dict)

    def score_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for LLM.score(): request-level fields in their offline places."""
        kwargs: dict[str, Any] = {}
        if "truncate_prompt_tokens" in self.request_defaults:
            kwargs["tokenization_kwargs"] = {"truncate_prompt_tokens": self.request_defaults["truncate_prompt_tokens"]}
        per_side = {
            k: v for k, v in self.request_defaults.items() if k in ("max_tokens_per_query", "max_tokens_per_doc")
        }
        if per_side:
            from vllm import PoolingParams

            kwargs["pooling_params"] = PoolingParams(extra_kwargs=per_side)
        return kwargs

    def changed(self) -> dict[str, Any]:
        """EngineArgs fields that differ from vLLM's defaults: the part of the plan that matters here."""
        from vllm.engine.arg_utils import EngineArgs

        defaults = EngineArgs(model=self.engine_args.model)
        return {
            f.name: getattr(self.engine_args, f.name)
            for f in dataclasses.fields(EngineArgs)
            if getattr(self.engine_args, f.name) != getattr(defaults, f.name) or f.name == "model"
        }


def server_argv(plan: Plan) -> list[str]:
    """The arguments the server's vLLM gets, the model as `--model` (plan/frontend.py knows both entry points)."""
    return server_args(plan.vllm_command)


def options_from_plan(plan: Plan) -> OfflineOptions:
    """Parse the server's command line with vLLM's own server parser, as `vllm serve` would; the request
    defaults are what the gateway adds to a request that chose no truncation (the plan's policy)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()  # type: ignore[no-untyped-call]  # vLLM's parser has no annotations
    namespace = make_arg_parser(parser).parse_args(server_argv(plan))
    engine_args = EngineArgs.from_cli_args(namespace)
    defaults = apply_default_truncation("/v1/score", {}, plan.truncation)
    return OfflineOptions(
        engine_args=engine_args,
        chat_template=getattr(namespace, "chat_template", None),
        env=dict(plan.vllm_env),
        request_defaults=dict(defaults),
    )


def plan_for(model: str | None = None, env: Mapping[str, str] | None = None) -> Plan:
    """The plan `reranker serve` would run with this environment (MODEL_NAME replaced by `model`).

    Planned exactly as `reranker serve` plans, so with no model at all it is the bundled cross-encoder.
    """
    from reranker_template.serve.stack import prepare

    env = dict(os.environ if env is None else env)
    if model:
        env["MODEL_NAME"] = model
    return prepare(container=False, env=env).plan


def rank(scores: Sequence[float], top_n: int | None = None) -> list[tuple[int, float]]:
    """(index, score) best first, the best `top_n` only when it is given (what /v1/rerank returns)."""
    ranked = sorted(enumerate(scores), key=lambda pair: pair[1], reverse=True)
    return ranked[:top_n] if top_n else ranked


class OfflineReranker:
    """The model loaded once in this process; score() and rerank() as often as you like.

    Give `plan` when you already have one (`reranker score-offline` plans once, to report a settings
    mistake before vLLM loads); otherwise the plan is the one `reranker serve` would run with `env`
    (default: this process's environment), MODEL_NAME replaced by `model`.

    The plan's environment (e.g. VLLM_CPU_KVCACHE_SPACE) is applied to this process before vLLM
    starts. LD_PRELOAD can only take effect for a new process: `reranker score-offline` restarts
    itself with it; a library user who wants the fast CPU path sets it before starting Python.
    """

    def __init__(
        self, model: str | None = None, env: Mapping[str, str] | None = None, *, plan: Plan | None = None
    ) -> None:
        from vllm import LLM
        from vllm.renderers.chat_utils import load_chat_template

        if plan is not None and (model is not None or env is not None):
            raise ValueError("OfflineReranker takes a plan, or a model and environment to plan with, not both")
        self.plan = plan if plan is not None else plan_for(model, env)
        self.options = options_from_plan(self.plan)
        if self.plan.quantized_copy is not None:  # CPU_QUANTIZATION=int8: the copy the server would serve
            from reranker_template.serve.int8_copy import ensure_planned_copy

            ensure_planned_copy(self.plan.quantized_copy, os.environ.get("HF_TOKEN"))
        for name, value in self.options.env.items():
            if name != "LD_PRELOAD":
                os.environ[name] = value
        self.llm = LLM(**vars(self.options.engine_args))
        # The server's --chat-template (a file or the template itself) goes to every score() call.
        self.chat_template = load_chat_template(self.options.chat_template) if self.options.chat_template else None

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One score per document, in input order (what /v1/score returns)."""
        if not documents:
            return []
        outputs = self.llm.score(
            query, list(documents), use_tqdm=False, chat_template=self.chat_template, **self.options.score_kwargs()
        )
        return [float(output.outputs.score) for output in outputs]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """(index, score) best first, like /v1/rerank."""
        return rank(self.score(query, documents), top_n)

    def close(self) -> None:
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()


def score(
    query: str, documents: Sequence[str], model: str | None = None, env: Mapping[str, str] | None = None
) -> list[float]:
    """Load the model (settings from `env`, default the environment), score, unload. For one-off checks;
    keep an OfflineReranker for batch jobs."""
    reranker = OfflineReranker(model, env)
    try:
        return reranker.score(query, documents)
    finally:
        reranker.close()
