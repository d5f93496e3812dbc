"""Each rerank route's answer in its owner's shape: Jina's and Cohere's, from vLLM's one shape.

vLLM answers `/v1/rerank`, `/rerank` and `/v2/rerank` alike: `{id, model, usage, results: [{index,
document: {text, multi_modal}, relevance_score}]}`, always with the documents and with `multi_modal: null`,
and its errors as `{"error": {message, type, param, code}}`. Strict clients expect the API they were written
for. The rules (pure functions, used by the gateway and the serverless worker alike):
- `/v1/rerank` (Jina's API; also Cohere v1's route) and `/rerank` (vLLM's Cohere-style route):
  `return_documents` (default true, as Jina) decides whether each result carries `document`, which is
  `{"text": ...}` (`multi_modal` only when it holds something); `id`, `model`, `usage` are kept;
  `top_n` is vLLM's own. Errors are `{"detail": message}` (Jina's FastAPI shape).
- `/v2/rerank` (Cohere v2): `{id, results: [{index, relevance_score, document?}], meta}` with Cohere's
  `meta` (api_version 2, billed search units, input tokens). Cohere v2 never returns documents, but seed
  001's Cohere example reads `doc.document.text` without asking, so `document` is there unless the client
  sends `return_documents: false`. Errors are `{"message": message}` (Cohere's shape).
- Every status code is vLLM's (or the gateway's): only the body changes. `/v1/score` and `/score` keep
  vLLM's shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RerankApi(StrEnum):
    JINA = "jina"  # /v1/rerank, /rerank
    COHERE_V2 = "cohere-v2"  # /v2/rerank


ROUTES = {"/v1/rerank": RerankApi.JINA, "/rerank": RerankApi.JINA, "/v2/rerank": RerankApi.COHERE_V2}
# Cohere bills one search unit per query with up to this many documents.
DOCUMENTS_PER_SEARCH_UNIT = 100


def api_for(path: str) -> RerankApi | None:
    """The rerank API a request path speaks, or None (score, models, anything else: vLLM's shapes)."""
    return ROUTES.get(path.rstrip("/") or "/")


@dataclass(frozen=True)
class RerankAsked:
    """What of the request decides the answer's shape."""

    api: RerankApi
    return_documents: bool
    documents: int

    @classmethod
    def of(cls, api: RerankApi, body: Any) -> RerankAsked:
        """From a parsed request body (anything: a body vLLM refuses is answered with its error)."""
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        documents = fields.get("documents")
        count = len(documents) if isinstance(documents, list) else 1
        return cls(api, fields.get("return_documents") is not False, count)


def _result(result: Any, with_document: bool) -> Any:
    if not isinstance(result, dict):
        return result
    shaped = {key: value for key, value in result.items() if key != "document"}
    document = result.get("document")
    if with_document and isinstance(document, dict):
        shaped["document"] = {key: value for key, value in document.items() if value is not None}
    return shaped


def shape_answer(asked: RerankAsked, body: Any) -> Any:
    """vLLM's successful rerank answer in the API's shape; anything else unchanged."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return body
    results = [_result(result, asked.return_documents) for result in body["results"]]
    if asked.api is RerankApi.JINA:
        return {**body, "results": results}
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens", usage.get("total_tokens")) if isinstance(usage, dict) else None
    meta: dict[str, Any] = {
        "api_version": {"version": "2"},
        "billed_units": {"search_units": max(1, math.ceil(asked.documents / DOCUMENTS_PER_SEARCH_UNIT))},
    }
    if isinstance(tokens, int):
        meta["tokens"] = {"input_tokens": tokens, "output_tokens": 0}
    return {"id": body.get("id"), "results": results, "meta": meta}


def error_message(body: Any) -> str | None:
    """The message of an error body in vLLM's (and the gateway's) shape, or None."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        return str(message) if message is not None else None
    return None


def shape_error(api: RerankApi, body: Any) -> Any:
    """An error body in the API's shape (fields beside "error", like the 503's "status", are kept)."""
    message = error_message(body)
    if message is None:
        return body
    rest = {key: value for key, value in body.items() if key != "error"}
    key = "message" if api is RerankApi.COHERE_V2 else "detail"
    return {key: message, **rest}
