"""The proxy to vLLM: one pooled session, request-body limits, default truncation, retry once, relay.

One aiohttp ClientSession with keep-alive carries every proxied request to vLLM on loopback. Small bodies
(both ways) are read whole, which is the fast path for rerank/score; large ones are streamed, and a
streamed request body is cut off at MAX_REQUEST_BYTES. A rerank/score body gets the plan's default
truncation fields (plan/truncation.py). A pooled connection that vLLM closed just as we reused it is
retried once. A rerank answer is put in the shape of the API the client called (rerank_api.py).
When vLLM cannot answer, `forward` returns an `UpstreamFailure` instead of a response:
what that means for /health and the client's 503 is the application's decision (app.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from reranker_template import rerank_api
from reranker_template.gateway import auth, responses
from reranker_template.plan.contract import TruncationPolicy
from reranker_template.plan.truncation import ROUTES as TRUNCATION_ROUTES
from reranker_template.plan.truncation import apply_default_truncation

SMALL_BODY = 1024 * 1024  # read whole below this size (the common case); stream above
JSON_CHECK_LIMIT = 256 * 1024  # bodies up to this size are checked for valid JSON before vLLM sees them
UPSTREAM_KEEPALIVE = 4.0  # seconds; below uvicorn's 5 s, so we never reuse a connection vLLM is closing
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)
DROP_REQUEST_HEADERS = HOP_BY_HOP | {"host", "content-length", "authorization", "expect", "cookie"}
DROP_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length", "date", "server"}
# A pooled keep-alive connection that vLLM closed as we reused it fails with one of these: worth one retry.
RETRYABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# The upstream's answer broke off while we relayed it.
RELAY_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

RequestBody = bytes | AsyncIterator[bytes] | None


class BodyTooLarge(Exception):
    """A request body passed MAX_REQUEST_BYTES: the application answers 413 (internal control flow)."""


@dataclass(frozen=True)
class UpstreamFailure:
    """vLLM could not answer a request. `down`: nothing listens (a refused connection), so vLLM is gone;
    otherwise the connection dropped, which may be one request's bad luck."""

    reason: str
    down: bool

    @classmethod
    def of(cls, exc: BaseException, down: bool) -> UpstreamFailure:
        return cls(f"{type(exc).__name__}: {exc}", down)


def forward_request_headers(headers: Mapping[str, str], cookie: str) -> CIMultiDict[str]:
    """The client's headers as vLLM gets them: no hop-by-hop ones, no credentials (our cookie removed,
    the client's other cookies kept)."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in DROP_REQUEST_HEADERS:
            out.add(name, value)
        elif lower == "cookie":
            rest = auth.cookie_header_without(value, cookie)
            if rest:
                out.add(name, rest)
    return out


def forward_response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in DROP_RESPONSE_HEADERS)


def cause_of(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` in the chain of causes of `exc` (aiohttp wraps what our body iterator raised)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None or isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """A request body of unknown length, passed through until it exceeds `limit`."""
    seen = 0
    async for chunk in stream.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge()
        yield chunk


def unreadable_body(request: web.Request, exc: BaseException) -> web.Response:
    """400 for a body aiohttp could not decode (Content-Encoding: gzip on bytes that are not gzip), with
    its parser's message. The connection closes after it: the rest of the body cannot be read, and
    aiohttp's attempt to drain it would fail again and be logged as an unhandled exception."""
    cause = exc.__cause__
    problem = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
    request.content.feed_eof()  # nothing more to drain
    response = responses.bad_request(f"could not read the request body: {problem}")
    response.force_close()
    return response


def upstream_url(upstream: str, request: web.Request) -> URL | None:
    """vLLM's URL for `request`, path and query byte for byte, without `token=` parameters; None when the
    request target is not a path."""
    raw_path = request.rel_url.raw_path
    if not raw_path.startswith("/"):
        return None
    query = request.rel_url.raw_query_string
    if query and auth.TOKEN_PARAM in query:
        query = auth.strip_token_param(query)
    return URL(upstream + raw_path + (f"?{query}" if query else ""), encoded=True)


class Proxy:
    """Forwards requests to vLLM at `upstream` (http://127.0.0.1:VLLM_PORT) over one pooled session."""

    def __init__(self, upstream: str, max_body: int, truncation: TruncationPolicy | None, cookie: str) -> None:
        self.upstream = upstream
        self.max_body = max_body
        self.truncation = truncation
        self.cookie = cookie  # our auth cookie's name: never forwarded
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> aiohttp.ClientSession:
        """The pooled session (created in the running event loop, at application start-up)."""
        connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=UPSTREAM_KEEPALIVE, ttl_dns_cache=None)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        return self.session

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    async def forward(self, request: web.Request) -> web.StreamResponse | UpstreamFailure:
        """vLLM's answer to `request`, a 4xx for a body we refuse, or why vLLM could not answer.
        Raises BodyTooLarge for a body over MAX_REQUEST_BYTES."""
        url = upstream_url(self.upstream, request)
        if url is None:
            return responses.bad_request("request target must be a path")
        try:
            data, parsed = await self.request_body(request)
        except ValueError as exc:
            return responses.bad_request(f"request body is not valid JSON: {exc}")
        except RecursionError:  # json.loads of something like '[[[[...' 100,000 levels deep
            return responses.bad_request("request body is not valid JSON: nested too deeply")
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
            return unreadable_body(request, exc)
        except ConnectionResetError:
            return responses.client_gone()
        sent = await self._send(request, url, data)
        if not isinstance(sent, aiohttp.ClientResponse):
            return sent
        api = rerank_api.api_for(request.path) if request.method == "POST" else None
        if api is not None and sent.status < 400:
            return await self._reshaped(sent, rerank_api.RerankAsked.of(api, parsed))
        return await self._relay(request, sent)

    async def request_body(self, request: web.Request) -> tuple[RequestBody, Any]:
        """The body to send (None, bytes read whole, or a stream bounded by MAX_REQUEST_BYTES) and, for a
        rerank/score route, the parsed JSON. Raises ValueError/RecursionError for a small JSON body that
        does not parse."""
        if not request.body_exists:
            return None, None
        length = request.content_length
        if length is not None and length > self.max_body:
            raise BodyTooLarge()
        if request.method == "POST" and request.path.rstrip("/") in TRUNCATION_ROUTES:
            return await self.truncated_body(request)
        if length is not None and length <= SMALL_BODY:
            data = await request.read()
            if length <= JSON_CHECK_LIMIT and "json" in request.headers.get(hdrs.CONTENT_TYPE, ""):
                json.loads(data)
            return data, None
        return limited(request.content, self.max_body), None

    async def truncated_body(self, request: web.Request) -> tuple[bytes, Any]:
        """A rerank/score body with null truncation fields dropped and the default ones added (see
        plan/truncation.py), and the body as the client sent it, parsed.

        Read whole (bounded by MAX_REQUEST_BYTES through client_max_size): the fields go into the JSON.
        """
        data = await request.read()
        body = json.loads(data)
        changed = apply_default_truncation(request.path, body, self.truncation)
        return (data if changed is body else json.dumps(changed).encode()), body

    async def _send(
        self, request: web.Request, url: URL, data: RequestBody
    ) -> aiohttp.ClientResponse | web.Response | UpstreamFailure:
        """The request sent to vLLM: its response (headers read), a 4xx when the client's body broke off,
        or the failure. A body already read whole is replayable, so a reused connection that vLLM had
        just closed is retried once."""
        assert self.session is not None, "Proxy.open() runs at application start-up"
        headers = forward_request_headers(request.headers, self.cookie)
        replayable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            try:
                return await self.session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False
                )
            except aiohttp.ClientConnectorError as exc:  # nothing listens: vLLM is down
                return UpstreamFailure.of(exc, down=True)
            except aiohttp.ClientError as exc:
                if cause_of(exc, BodyTooLarge):  # raised by limited() while the body was being sent
                    raise BodyTooLarge() from exc
                unreadable = cause_of(exc, web.RequestPayloadError)  # the client's streamed body was broken
                if unreadable:
                    return unreadable_body(request, unreadable)
                if isinstance(exc, aiohttp.ClientPayloadError):
                    return responses.bad_request(f"could not read the request body: {exc}")
                if request.transport is None or request.transport.is_closing():
                    return responses.client_gone()  # the client hung up while its body was streamed
                if attempt == 1 and replayable and isinstance(exc, RETRYABLE):
                    continue
                return UpstreamFailure.of(exc, down=False)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _reshaped(
        self, upstream: aiohttp.ClientResponse, asked: rerank_api.RerankAsked
    ) -> web.StreamResponse | UpstreamFailure:
        """vLLM's rerank answer in the shape of the API the client called (rerank_api.py), read whole
        whatever its size: the shape is a change to its JSON."""
        try:
            raw = await upstream.read()
        except RELAY_ERRORS as exc:
            return UpstreamFailure.of(exc, down=False)
        finally:
            upstream.release()
        headers = forward_response_headers(upstream.headers)
        try:
            body = json.loads(raw)
        except ValueError:  # not JSON (or compressed): passed on as it came
            return web.Response(status=upstream.status, body=raw, headers=headers)
        shaped = json.dumps(rerank_api.shape_answer(asked, body)).encode()
        return web.Response(status=upstream.status, body=shaped, headers=headers)

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse | UpstreamFailure:
        """vLLM's response passed to the client: read whole when small, streamed otherwise. A failure
        after the headers were sent can only cut the connection."""
        response: web.StreamResponse | None = None
        try:
            headers = forward_response_headers(upstream.headers)
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY:
                return web.Response(status=upstream.status, body=await upstream.read(), headers=headers)
            response = web.StreamResponse(status=upstream.status, headers=headers)
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except RELAY_ERRORS as exc:
            if response is not None and response.prepared:
                raise  # headers already sent: all we can do is cut the connection
            return UpstreamFailure.of(exc, down=False)
        finally:
            upstream.release()
