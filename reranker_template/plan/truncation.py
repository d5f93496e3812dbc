"""Default truncation for /rerank and /score: one long document must not fail a whole rerank call.

vLLM 0.32 rejects a pair longer than --max-model-len with HTTP 400 unless the request asks for truncation,
and it has no server-side default. So the gateway adds truncation fields to requests that set none:

- "pair" models (cross-encoders that join query and document with separator tokens, embedding models, and
  causal rerankers without a template): `truncate_prompt_tokens: -1`, i.e. cut to the model's limit. For a
  cross-encoder the tokenizer cuts the longer side first ("longest_first"), in practice the document's end.
- "split" models (a score template, or jina-reranker-m0's built-in prompt): cutting the composed prompt would
  cut the template's tail (the token the model scores) or jina's query, so the query and the document are
  cut *before* the prompt is composed: `max_tokens_per_query` = a quarter of --max-model-len,
  `max_tokens_per_doc` = the rest less room for the template and its instruction.

A request's own `max_tokens_per_doc` / `max_tokens_per_query` (Cohere v2 clients send 4096) narrows these
budgets but never widens them past the model's limit (for "pair" models, one the model cannot hold is
dropped): as Cohere defines it, a long document is cut, never refused. On /v2/rerank a request without one
gets Cohere v2's default, 4096 tokens per document. A request that sets
`truncate_prompt_tokens` chooses its own truncation; TRUNCATE=false turns the default off.
The policy is decided once, at plan time (`decide_truncation`, stored in the `Plan`); the gateway and
offline scoring apply it to each request body (`apply_default_truncation`, pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reranker_template.plan.contract import TruncationMode, TruncationPolicy
from reranker_template.rerank_api import RerankApi, api_for

ROUTES = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score"})
REQUEST_FIELDS = ("truncate_prompt_tokens", "max_tokens_per_query", "max_tokens_per_doc")
# Tokens kept free for a score template's own text (Qwen3-Reranker's system prompt and scaffolding are
# about 60 tokens, mxbai-rerank-v2's about 90); the instruction is counted on top, one token per character.
TEMPLATE_RESERVE = 256
# Cohere v2's default `max_tokens_per_doc`: what a /v2/rerank request that sends none gets, as from Cohere.
COHERE_V2_DOC_TOKENS = 4096


def decide_truncation(
    enabled: bool, split: bool, max_model_len: int | None, instruction_chars: int
) -> TruncationPolicy | None:
    """The policy, decided at plan time. `split`: the model composes a prompt (score template or a
    built-in one); `enabled`: TRUNCATE. None when requests go to vLLM unchanged."""
    if not enabled:
        return None
    if split and not max_model_len:
        return None  # without the limit we cannot size the budgets; vLLM stays strict
    return TruncationPolicy(TruncationMode.SPLIT if split else TruncationMode.PAIR, max_model_len, instruction_chars)


# What each mode does to a too long pair, for `reranker plan`.
_EXPLAINED = {
    TruncationMode.PAIR: "a pair longer than the model's limit is cut to fit, the longer side first "
    "(in practice the end of the document)",
    TruncationMode.SPLIT: "the query keeps at most a quarter of the context and the document the rest, "
    "less room for the prompt template; their ends are cut",
}


def explain_truncation(enabled: bool, policy: TruncationPolicy | None) -> str:
    """The plan's reason line for the policy `decide_truncation` returned."""
    if not enabled:
        return "truncation: off (TRUNCATE=false): a pair longer than the model's limit is an HTTP 400, as in vLLM"
    if policy is None:
        return (
            "truncation: off: the model composes a prompt and its length limit is unknown, so no budgets can be "
            "sized; a pair longer than the limit is an HTTP 400 (set --max-model-len in VLLM_ARGS to turn it on)"
        )
    return (
        "truncation: on (the gateway adds it to /rerank and /score requests that set none): " + _EXPLAINED[policy.mode]
    )


def _request_instruction(body: Mapping[str, Any]) -> str:
    kwargs = body.get("chat_template_kwargs")
    nested = kwargs.get("instruction") if isinstance(kwargs, Mapping) else None
    return str(body.get("instruction") or nested or "")


def apply_default_truncation(path: str, body: Any, truncation: TruncationPolicy | None) -> Any:
    """The request body to send to vLLM: `body` with our truncation fields added when it chose none.

    A truncation field sent as null means "the default" (LangChain's CohereRerank sends
    `"max_tokens_per_doc": null`); vLLM's integer fields refuse null with a 400, so it is dropped, with or
    without a policy. Pure: returns a new dict (or `body` itself when nothing changes). `path` is the
    request path without the query string; other routes and non-object bodies pass through untouched.
    """
    if not isinstance(body, dict) or path.rstrip("/") not in ROUTES:
        return body
    nulls = [name for name in REQUEST_FIELDS if name in body and body[name] is None]
    if nulls:
        body = {key: value for key, value in body.items() if key not in nulls}
    if truncation is None or "truncate_prompt_tokens" in body:
        return body
    if api_for(path) is RerankApi.COHERE_V2 and "max_tokens_per_doc" not in body:
        body = {**body, "max_tokens_per_doc": COHERE_V2_DOC_TOKENS}
    if truncation.mode is TruncationMode.PAIR:
        return {**_within_model(body, truncation.max_model_len), "truncate_prompt_tokens": -1}
    max_len = truncation.max_model_len or 0
    query_budget = max_len // 4
    reserve = TEMPLATE_RESERVE + max(truncation.instruction_chars, len(_request_instruction(body)))
    doc_budget = max_len - query_budget - reserve
    if query_budget <= 0 or doc_budget <= 0:
        return body  # a context this small leaves no room: let vLLM answer as it would
    return {
        **body,
        "max_tokens_per_query": _narrower(body.get("max_tokens_per_query"), query_budget),
        "max_tokens_per_doc": _narrower(body.get("max_tokens_per_doc"), doc_budget),
    }


def _within_model(body: dict[str, Any], max_model_len: int | None) -> dict[str, Any]:
    """`body` without a per-text budget the model cannot hold: vLLM refuses `max_tokens_per_doc` (or
    `_query`) of `--max-model-len` or more with a 400, while cutting the pair to the model already cuts
    the text further."""
    if max_model_len is None:
        return body
    too_big = [
        name
        for name in ("max_tokens_per_doc", "max_tokens_per_query")
        if (tokens := _token_count(body.get(name))) is not None and tokens >= max_model_len
    ]
    return {key: value for key, value in body.items() if key not in too_big} if too_big else body


def _token_count(value: Any) -> int | None:
    """A request's token budget as a number (JSON's true/false are not one), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _narrower(asked: Any, budget: int) -> Any:
    """The client's budget where it is a smaller positive number than ours, else ours."""
    tokens = _token_count(asked)
    return tokens if tokens is not None and 0 < tokens < budget else budget
