"""Property-based fuzzing of the gateway's routes, through to the real vLLM (hypothesis).

Properties, whatever a client sends: never a 5xx (vLLM is up, so every failure is the client's mistake),
every error a JSON message, and the gateway never crashes (same pid at the end). Bounded: a few hundred
examples in all, each request with a timeout, no hypothesis deadline (vLLM's latency varies on a busy box).
"""

from __future__ import annotations

import json
import math
import string
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.stack_runner import RunningStack

pytestmark = pytest.mark.vllm

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTES = [
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/v1/score",
    "/score",
    "/v1/models",
    "/health",
    "/ping",
    "/",
    "/metrics",
    "/tokenize",
    "/pooling",
    "/classify",
    "/openapi.json",
    "/version",
    "/_gateway/static/landing.js",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=60)
documents = st.one_of(st.lists(texts, max_size=6), st.lists(json_values, max_size=4), json_values)


@pytest.fixture(scope="module")
def stack(minilm_stack: RunningStack) -> Iterator[RunningStack]:
    pid = minilm_stack.supervisorctl("pid", "gateway").strip()
    yield minilm_stack
    assert minilm_stack.supervisorctl("pid", "gateway").strip() == pid, "the gateway was restarted"
    assert requests.get(minilm_stack.gateway_url + "/health", timeout=10).status_code == 200


def encode(body: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity included (not JSON, but what careless clients send)."""
    return json.dumps(body).encode()


def check(response: requests.Response, method: str = "POST") -> None:
    assert response.status_code < 500, (response.status_code, response.request.body, response.text[:500])
    if response.status_code >= 400 and method != "HEAD":
        assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[:300]
        body = response.json()
        error = body.get("error")
        message = (
            (error.get("message") if isinstance(error, dict) else error) or body.get("message") or body.get("detail")
        )
        assert message, body


def post(stack: RunningStack, route: str, body: bytes) -> requests.Response:
    return requests.post(
        stack.gateway_url + route,
        data=body,
        timeout=60,
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
    )


@FUZZ
@given(
    model=st.one_of(st.just("minilm"), json_values),
    query=st.one_of(texts, json_values),
    docs=documents,
    extra=st.dictionaries(
        st.sampled_from(
            [
                "top_n",
                "return_documents",
                "truncate_prompt_tokens",
                "priority",
                "max_tokens_per_doc",
                "user",
                "request_id",
                "softmax",
                "use_activation",
                "instruction",
                "chat_template_kwargs",
                "max_tokens_per_query",
            ]
        ),
        json_values,
        max_size=3,
    ),
    route=st.sampled_from(["/v1/rerank", "/v2/rerank", "/rerank"]),
)
def test_fuzz_rerank_bodies(
    stack: RunningStack, model: Any, query: Any, docs: Any, extra: dict[str, Any], route: str
) -> None:
    body = {"model": model, "query": query, "documents": docs, **extra}
    response = post(stack, route, encode(body))
    check(response)
    if response.status_code == 200:
        results = response.json()["results"]
        assert all(isinstance(r["relevance_score"], float) and not math.isnan(r["relevance_score"]) for r in results)


@FUZZ
@given(
    text_1=st.one_of(texts, st.lists(texts, max_size=4), json_values),
    text_2=st.one_of(texts, st.lists(texts, max_size=4), json_values),
    extra=st.dictionaries(
        st.sampled_from(["truncate_prompt_tokens", "encoding_format", "use_activation"]), json_values, max_size=2
    ),
    route=st.sampled_from(["/v1/score", "/score"]),
)
def test_fuzz_score_bodies(stack: RunningStack, text_1: Any, text_2: Any, extra: dict[str, Any], route: str) -> None:
    check(post(stack, route, encode({"model": "minilm", "text_1": text_1, "text_2": text_2, **extra})))


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), json_values.map(encode)), route=st.sampled_from(ROUTES))
def test_fuzz_raw_bodies(stack: RunningStack, body: bytes, route: str) -> None:
    check(post(stack, route, body))


url_chars = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?#[] \\\"<>{}|^`é中\x7f", max_size=40
)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    route=st.one_of(st.sampled_from(ROUTES), url_chars.map(lambda s: "/" + s)),
    query=st.dictionaries(st.sampled_from(["token", "model", "x", "format", "a b"]), st.text(max_size=20), max_size=3),
    header_values=st.lists(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.lstrip),
        min_size=3,
        max_size=3,
    ),  # (requests itself refuses a value with leading spaces)
    authorized=st.booleans(),
)
def test_fuzz_routes_methods_and_headers(
    stack: RunningStack, method: str, route: str, query: dict[str, str], header_values: list[str], authorized: bool
) -> None:
    path = urllib.parse.quote(route, safe="/%")
    if query:
        path += "?" + urllib.parse.urlencode(query)
    accept, cookie, origin = header_values
    headers = {"Accept": accept, "Cookie": cookie, "X-Fuzz": origin}
    if authorized:
        headers["Authorization"] = f"Bearer {stack.token}"
    response = requests.request(method, stack.gateway_url + path, headers=headers, timeout=60, allow_redirects=False)
    if response.status_code == 400 and response.headers.get("Content-Type", "").startswith("text/plain"):
        # aiohttp's parser refused the request line before our code (test_bad_input documents which).
        return
    if response.status_code == 401 and "text/html" in response.headers.get("Content-Type", ""):
        assert "text/html" in accept  # the token prompt is for browsers only
        return
    check(response, method)


@FUZZ
@given(
    authorization=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=120).map(str.lstrip),
    token=st.text(max_size=40),
)
def test_fuzz_credentials_never_let_a_wrong_token_in(stack: RunningStack, authorization: str, token: str) -> None:
    if stack.token in authorization or stack.token in token:
        return
    response = requests.get(
        stack.gateway_url + "/v1/models",
        params={"token": token},
        timeout=30,
        headers={"Authorization": authorization.encode("latin-1")},
    )
    if response.status_code == 400 and response.headers.get("Content-Type", "").startswith("text/plain"):
        assert any(ord(c) == 0x7F or ord(c) < 0x20 for c in authorization), authorization  # aiohttp's parser
        return
    assert response.status_code == 401, (authorization, token, response.status_code)
    check(response, "GET")
