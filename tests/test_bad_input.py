"""Bad input against the real stack's gateway and, through it, vLLM: every client mistake gets a 4xx with
a JSON message, never a 5xx, and the gateway never crashes (same pid, still serving, no 5xx in its log).

The one exception is aiohttp's HTTP parser: a request it cannot parse at all (a malformed request line,
a method outside HTTP's registry such as `BREW`, a header line over 8190 bytes, more than 128 headers,
a control character in a header, bytes not allowed in a URL, a broken chunked body) is answered by
aiohttp itself with a plain-text 400 before any of our code runs; aiohttp has no hook to change that
answer (README, Security). Those cases are checked for the 400 and for the gateway's survival.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.stack_runner import RunningStack

from reranker_template.client.http import body_message

pytestmark = pytest.mark.vllm

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack(minilm_stack: RunningStack) -> Iterator[RunningStack]:
    """The shared stack, checked after the whole battery: the same gateway process, still serving."""
    pid = minilm_stack.supervisorctl("pid", "gateway").strip()
    log_size = gateway_log(minilm_stack).stat().st_size
    yield minilm_stack
    assert minilm_stack.supervisorctl("pid", "gateway").strip() == pid, "the gateway was restarted"
    assert requests.get(minilm_stack.gateway_url + "/health", timeout=10).status_code == 200
    new_lines = gateway_log(minilm_stack).read_bytes()[log_size:].decode("utf-8", "replace")
    server_errors = re.findall(r'" (5\d\d) [\d.]+ ms', new_lines)
    assert not server_errors, f"5xx answers in the gateway's access log: {new_lines[-3000:]}"


def gateway_log(stack: RunningStack) -> Any:
    return stack.state_dir / "logs" / "gateway.log"


def bearer(stack: RunningStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


def error_message(response: requests.Response) -> str:
    """The message of a JSON error, in our shape or vLLM's; fails unless the answer is a JSON error."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else None
    message = message or body.get("message") or body.get("detail")
    assert message, body
    return str(message)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from the socket: (status, lower-case headers, body of Content-Length bytes)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def raw_exchange(stack: RunningStack, data: bytes, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one HTTP response: (status, headers, body). For what `requests` cannot send."""
    port = int(stack.env["GATEWAY_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def assert_json_error(status: int, headers: dict[str, str], body: bytes) -> str:
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
    return str(body_message(json.loads(body)))


# --- JSON bodies through the gateway to vLLM -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "minilm", "query": "q", "documents": [',
        b"not json at all",
        b"\xff\xfe\xfd",
        b'{"model": "minilm", "query": "\xff\xfe", "documents": ["a"]}',  # JSON, but not UTF-8
        b"",
        b'{"a": ' * 100_000,  # deep nesting, cut short
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting, complete
        b'{"model": "minilm", "query": "q", "documents": ["a"]} trailing',
    ],
    ids=[
        "truncated",
        "text",
        "binary",
        "non-utf8-string",
        "empty",
        "deep-nesting",
        "deep-nesting-complete",
        "trailing-garbage",
    ],
)
def test_malformed_json_is_400_json(stack: RunningStack, body: bytes) -> None:
    response = requests.post(
        stack.gateway_url + "/v1/rerank",
        data=body,
        timeout=30,
        headers={**bearer(stack), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text[:300]
    error_message(response)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "minilm", "query": 5, "documents": ["a"]},
        {"model": "minilm", "query": "q", "documents": "not a list"},
        {"model": "minilm", "query": "q", "documents": [1, 2, 3]},
        {"model": "minilm", "query": "q", "documents": [{"nested": ["x"]}]},
        {"model": "minilm", "query": "q", "documents": None},
        {"model": "minilm", "query": "q"},
        {"model": "minilm", "query": "q", "documents": ["a"], "top_n": "three"},
        {"model": "minilm", "query": "q", "documents": ["a"], "top_n": -5},
        {"model": 12, "query": "q", "documents": ["a"]},
        {"model": "no-such-model", "query": "q", "documents": ["a"]},
        [1, 2, 3],
        "just a string",
        None,
    ],
    ids=[
        "query-int",
        "documents-str",
        "documents-ints",
        "documents-objects",
        "documents-null",
        "no-documents",
        "top_n-str",
        "top_n-negative",
        "model-int",
        "unknown-model",
        "array",
        "string",
        "null",
    ],
)
def test_wrong_types_are_4xx_json(stack: RunningStack, body: Any) -> None:
    response = requests.post(stack.gateway_url + "/v1/rerank", json=body, headers=bearer(stack), timeout=30)
    if response.status_code == 200:  # vLLM may read a value leniently; then the answer must be a real one
        assert isinstance(response.json()["results"], list), response.text
        return
    error_message(response)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "minilm", "text_1": 5, "text_2": ["a"]},
        {"model": "minilm", "text_1": "q", "text_2": {"a": 1}},
        {"model": "minilm", "text_1": ["a", "b"], "text_2": ["a", "b", "c"]},  # lengths do not pair up
        {"model": "minilm", "text_1": "q"},
    ],
    ids=["text_1-int", "text_2-object", "mismatched-lists", "no-text_2"],
)
def test_score_wrong_types_are_4xx_json(stack: RunningStack, body: Any) -> None:
    response = requests.post(stack.gateway_url + "/v1/score", json=body, headers=bearer(stack), timeout=30)
    error_message(response)


@pytest.mark.parametrize(
    "route, body",
    [
        ("/v1/rerank", {"model": "minilm", "query": "q", "documents": []}),
        ("/v1/score", {"model": "minilm", "text_1": "q", "text_2": []}),
    ],
)
def test_empty_documents_list(stack: RunningStack, route: str, body: dict[str, Any]) -> None:
    response = requests.post(stack.gateway_url + route, json=body, headers=bearer(stack), timeout=30)
    assert response.status_code == 400
    assert "at least one" in error_message(response).lower()


def test_ten_thousand_documents(stack: RunningStack) -> None:
    """Served, completely and correctly: the gateway sets no limit on the number of documents (README,
    Security: "a token holder can send 10,000 documents per request"), only on the body's size
    (MAX_REQUEST_BYTES), and vLLM sets none either."""
    documents = [f"doc {i}" for i in range(10_000)]
    started = time.monotonic()
    response = requests.post(
        stack.gateway_url + "/v1/rerank",
        headers=bearer(stack),
        timeout=170,
        json={"model": "minilm", "query": "doc 42", "documents": documents, "top_n": 3},
    )
    print(f"10,000 documents: {response.status_code} in {time.monotonic() - started:.1f} s")
    assert response.status_code == 200, response.text[:500]
    results = response.json()["results"]
    assert len(results) == 3 and results[0]["index"] == 42, results  # the identical document ranks first


def test_wrong_content_type_with_json_body(stack: RunningStack) -> None:
    """A JSON body labelled text/plain: the gateway forwards the label as it came (it reads the body only to
    add the truncation default), and vLLM refuses any media type but JSON with a 400 that says so."""
    body = json.dumps({"model": "minilm", "query": "q", "documents": ["a"]}).encode()
    response = requests.post(
        stack.gateway_url + "/v1/rerank", data=body, timeout=30, headers={**bearer(stack), "Content-Type": "text/plain"}
    )
    assert response.status_code == 400, response.text[:300]
    assert "application/json" in error_message(response)


def test_hundred_megabyte_body_is_refused_before_it_is_read(stack: RunningStack) -> None:
    """413 JSON as soon as the headers announce it: the gateway neither reads nor buffers 100 MB."""
    size = 100 * 1024 * 1024
    head = (
        f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, headers, body = raw_exchange(stack, head + b"[" + b" " * 65536)
    assert status == 413 and "MAX_REQUEST_BYTES" in assert_json_error(status, headers, body)
    assert headers.get("connection", "").lower() == "close"
    assert time.monotonic() - started < 10


def test_hundred_megabyte_chunked_body_is_cut_at_the_limit(stack: RunningStack) -> None:
    """No Content-Length: the gateway counts while the body streams in and answers 413 JSON as soon as it
    passes MAX_REQUEST_BYTES (32 MiB), while the client is still sending (aiohttp then discards the rest,
    so the answer is not lost to a reset). The client stops sending when the answer arrives. A crash ends
    the connection without an answer (read_response fails); buffering everything answers after the end."""
    total, chunk = 100 * MIB, b"x" * MIB
    head = (
        f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", int(stack.env["GATEWAY_PORT"])), timeout=60) as sock:
        sock.sendall(head)
        while sent < total and not select.select([sock], [], [], 0)[0]:  # nothing to read yet: keep sending
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        if sent == total:
            sock.sendall(b"0\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 413 and "MAX_REQUEST_BYTES" in assert_json_error(status, headers, body)
    assert sent < total, "the 413 came only after the whole 100 MB body"


def test_body_shorter_than_announced(stack: RunningStack) -> None:
    """A client that announces 1000 bytes, sends 10 and hangs up: nothing for the gateway to answer, and
    nothing that breaks it (the module fixture checks the gateway is still the same process)."""
    port = int(stack.env["GATEWAY_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":'.encode()
        )
    assert requests.get(stack.gateway_url + "/health", timeout=10).status_code == 200


# --- URLs, methods, headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/v1/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/_gateway/static/../../../etc/passwd",
        "/_gateway/static/..%2f..%2fauth.py",
        "/_gateway/static/%2e%2e/app.py",
        "/_gateway/static/landing.js/../../app.py",
        "//etc/passwd",
        "/v1/rerank%00.json",
    ],
)
def test_path_traversal_finds_nothing(stack: RunningStack, path: str) -> None:
    status, headers, body = raw_exchange(
        stack,
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
    assert b"root:" not in body and b"import" not in body


@pytest.mark.parametrize("method", ["PROPFIND", "MKCOL", "DELETE", "PUT", "PATCH", "TRACE"])
def test_unknown_or_unsupported_methods(stack: RunningStack, method: str) -> None:
    response = requests.request(method, stack.gateway_url + "/v1/rerank", headers=bearer(stack), timeout=30)
    error_message(response)


def test_unknown_method_without_token_is_401_json(stack: RunningStack) -> None:
    response = requests.request("PROPFIND", stack.gateway_url + "/v1/rerank", timeout=30)
    assert response.status_code == 401
    error_message(response)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    ],
    ids=["connect", "options-asterisk", "unknown-expect"],
)
def test_odd_request_targets_and_expectations_are_json(stack: RunningStack, request_bytes: bytes) -> None:
    assert_json_error(*raw_exchange(stack, request_bytes))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/models?token=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",  # a method name outside HTTP's registry
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x7f\x01\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",  # TLS on the HTTP port
        b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ],
    ids=[
        "20KB-header",
        "300-headers",
        "10KB-url",
        "non-utf8-path",
        "non-utf8-query",
        "bad-method-token",
        "unregistered-method",
        "bad-version",
        "control-chars-in-header",
        "tls-hello",
        "bad-content-length",
        "length-and-chunked",
        "bad-chunk-size",
    ],
)
def test_unparseable_requests_are_400_from_aiohttp(stack: RunningStack, request_bytes: bytes) -> None:
    """aiohttp's parser answers these (plain text, its format): 400, and the gateway carries on."""
    status, headers, body = raw_exchange(stack, request_bytes)
    assert status == 400, (status, body[:300])
    assert headers.get("connection", "").lower() == "close" or headers.get("content-type", "").startswith("text/plain")


def test_large_but_legal_headers_pass(stack: RunningStack) -> None:
    headers = {**bearer(stack), **{f"X-Extra-{i}": "v" * 100 for i in range(50)}, "X-Long": "a" * 8000}
    response = requests.get(stack.gateway_url + "/v1/models", headers=headers, timeout=30)
    assert response.status_code == 200 and response.json()["data"][0]["id"] == "minilm"


def test_non_utf8_header_value_is_not_a_crash(stack: RunningStack) -> None:
    status, headers, body = raw_exchange(
        stack,
        (
            f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n".encode()
            + b"Connection: close\r\nX-Odd: \xff\xfe\x80\r\n\r\n"
        ),
    )
    assert status == 200 or assert_json_error(status, headers, body)


def test_non_utf8_authorization_is_401_json(stack: RunningStack) -> None:
    status, headers, body = raw_exchange(
        stack, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    assert status == 401
    assert_json_error(status, headers, body)


def test_repeated_token_parameter(stack: RunningStack) -> None:
    """The first `token` decides (a valid one later does not rescue a wrong first one), and no `token`
    parameter reaches vLLM."""
    url = stack.gateway_url + "/v1/models"
    wrong_first = requests.get(f"{url}?token=wrong&token={stack.token}", timeout=30)
    assert wrong_first.status_code == 401
    error_message(wrong_first)
    right_first = requests.get(f"{url}?token={stack.token}&token=wrong&token=", timeout=30)
    assert right_first.status_code == 200
    many = requests.get(url + "?" + "&".join(["token=x"] * 2000), timeout=30)
    assert many.status_code in (400, 401, 414)


def test_garbage_authorization_headers_are_401_json(stack: RunningStack) -> None:
    for value in ("Bearer", "Bearer ", "Basic ===", "Basic " + "A" * 5000, "Digest x", "Bearer a b c", "Bearer\ttoken"):
        response = requests.get(stack.gateway_url + "/v1/models", headers={"Authorization": value}, timeout=30)
        assert response.status_code == 401, value
        error_message(response)
