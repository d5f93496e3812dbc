"""The one error shape the gateway answers with (the role of vLLM's protocol.py for our own answers).

Every error, ours or aiohttp's, is `{"error": {"message", "type", "code"}}`: the shape vLLM uses, so a
client parses ours and vLLM's the same way. A 503 adds the health `status` (loading, down, failed) and a
Retry-After header, so a client knows whether and when to come back. On a rerank route the body is then
put in that API's error shape (`in_route_shape`, rerank_api.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from aiohttp import hdrs, web

from reranker_template import rerank_api
from reranker_template.protocol import RETRY_AFTER_SECONDS, HealthBody, HealthState


class ErrorType(StrEnum):
    """The `type` of an error body (vLLM's names where vLLM has one)."""

    BAD_REQUEST = "BadRequestError"
    SERVER = "ServerError"
    UNAUTHORIZED = "Unauthorized"
    FORBIDDEN = "Forbidden"
    NOT_FOUND = "NotFound"
    TOO_LARGE = "RequestEntityTooLarge"
    EXPECTATION_FAILED = "ExpectationFailed"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"


def json_error(
    status: int,
    message: str,
    kind: ErrorType,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    """An error response; `extra` adds top-level fields next to "error" (the 503's "status")."""
    payload = {"error": {"message": message, "type": str(kind), "code": status}, **(extra or {})}
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


def bad_request(message: str) -> web.Response:
    return json_error(400, message, ErrorType.BAD_REQUEST)


def client_gone() -> web.Response:
    """The answer to a client that closed its connection before sending its whole body: nobody reads it,
    but it is logged as the client's 400 (not a 500 with a traceback, not a vLLM failure)."""
    return bad_request("the client closed the connection before sending the whole body")


def too_large(max_body: int) -> web.Response:
    """413, and the connection closed: the rest of the body is not worth reading."""
    return json_error(
        413,
        f"request body larger than MAX_REQUEST_BYTES ({max_body} bytes)",
        ErrorType.TOO_LARGE,
        {hdrs.CONNECTION: "close"},
    )


def not_ready(health: HealthBody) -> web.Response:
    """503 for a request vLLM cannot answer now, saying why (the /health state) and when to retry."""
    message = {
        HealthState.LOADING: f"the model is loading ({health.phase}); retry shortly",
        HealthState.FAILED: f"vLLM failed: {health.reason}",
    }.get(health.status, f"vLLM is not answering ({health.reason}); retry shortly")
    headers: dict[str, str] = {
        hdrs.RETRY_AFTER: str(RETRY_AFTER_SECONDS[health.status]),
        hdrs.CACHE_CONTROL: "no-store",
    }
    return json_error(503, message, ErrorType.SERVICE_UNAVAILABLE, headers, extra={"status": str(health.status)})


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusal (a bad body encoding, a body over client_max_size, ...) in our shape.

    The message is the text aiohttp gave the exception, or its reason phrase when the text is only
    aiohttp's default "<code>: <reason>".
    """
    text = exc.text or ""
    message = exc.reason if text in ("", f"{exc.status}: {exc.reason}") else text
    return json_error(exc.status, message, ErrorType.BAD_REQUEST if exc.status < 500 else ErrorType.SERVER)


def in_route_shape(path: str, response: web.StreamResponse) -> web.StreamResponse:
    """An error answer on a rerank route in that API's error shape (rerank_api.py): Jina's `detail`,
    Cohere's `message`. Ours and vLLM's alike; the status and headers are kept."""
    api = rerank_api.api_for(path)
    if api is None or response.status < 400 or not isinstance(response, web.Response):
        return response
    if not isinstance(response.body, bytes) or "json" not in (response.content_type or ""):
        return response
    try:
        body = json.loads(response.body)
    except ValueError:
        return response
    shaped = rerank_api.shape_error(api, body)
    if shaped is body:
        return response
    response.body = json.dumps(shaped).encode()
    return response
