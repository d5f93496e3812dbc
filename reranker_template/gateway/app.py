"""The gateway's HTTP application: auth on every route, /health, the landing page, /metrics, the proxy.

One catch-all handler does the routing (cheaper per request than middleware chains), and one pooled
aiohttp ClientSession with keep-alive carries every proxied request to vLLM on loopback. Small bodies
(both ways) are read whole, which is the fast path for rerank/score; large ones are streamed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from reranker_template.gateway import auth, landing
from reranker_template.gateway.health import UpstreamState, health_report, poll_upstream
from reranker_template.gateway.metrics import GatewayMetrics
from reranker_template.paths import Paths
from reranker_template.plan.contract import Plan, TruncationPolicy, read_plan
from reranker_template.plan.truncation import ROUTES as TRUNCATION_ROUTES
from reranker_template.plan.truncation import apply_default_truncation, decide_truncation
from reranker_template.protocol import RETRY_AFTER_SECONDS, HealthBody, HealthState
from reranker_template.serve.sshd import tunnel_command
from reranker_template.serve.status import read_status
from reranker_template.settings import Settings

log = logging.getLogger("reranker.gateway")

SMALL_BODY = 1024 * 1024  # read whole below this size (the common case); stream above
JSON_CHECK_LIMIT = 256 * 1024  # bodies up to this size are checked for valid JSON before vLLM sees them
UPSTREAM_KEEPALIVE = 4.0  # seconds; below uvicorn's 5 s, so we never reuse a connection vLLM is closing
PUBLIC_PATHS = frozenset({"/health", "/ping"})
STATIC_PREFIX = "/_gateway/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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
WWW_AUTHENTICATE = 'Bearer realm="reranker", charset="UTF-8"'


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the application needs; built by the CLI from settings, paths and the environment."""

    settings: Settings
    paths: Paths
    tokens: tuple[str, ...] = field(repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    https: bool = False
    poll_interval: float = 1.0

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.settings.vllm_port}"


def error_body(status: int, message: str, kind: str) -> bytes:
    """Errors in the shape vLLM uses, so clients parse ours and vLLM's the same way."""
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


def json_error(status: int, message: str, kind: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=error_body(status, message, kind), content_type="application/json", headers=headers
    )


def strip_token_param(raw_query: str) -> str:
    """The raw query string without `token=` parameters, other parameters byte for byte unchanged."""
    kept = [part for part in raw_query.split("&") if part and part.split("=", 1)[0] != auth.TOKEN_PARAM]
    return "&".join(kept)


def forward_request_headers(headers: Mapping[str, str], cookie: str) -> CIMultiDict[str]:
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


def client_gone() -> web.Response:
    """The answer to a client that closed its connection before sending its whole body: nobody reads it,
    but it is logged as the client's 400 (not a 500 with a traceback, not a vLLM failure)."""
    return json_error(400, "the client closed the connection before sending the whole body", "BadRequestError")


class BodyTooLarge(Exception):
    pass


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """A request body of unknown length, passed through until it exceeds `limit`."""
    seen = 0
    async for chunk in stream.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge()
        yield chunk


class Gateway:
    """Request handling. State lives here (per application), never in module globals."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.checker = auth.TokenChecker(config.tokens)
        self.auth_enabled = config.settings.enable_auth
        self.cookie = auth.cookie_name(config.env, config.settings.gateway_port)
        self.cookie_attrs = auth.cookie_attributes(config.https)
        self.state = UpstreamState()
        self.metrics = GatewayMetrics()
        self.upstream = config.upstream
        self.max_body = config.settings.max_request_bytes
        self.static = landing.static_assets()
        self.session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        # The stack writes plan.json before any service starts and never changes it while it runs:
        # read it once, not on every /health and page.
        self._plan = _read_plan(config.paths.plan_file)
        self.truncation = self._plan.truncation if self._plan else _planless_truncation(self.settings)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=UPSTREAM_KEEPALIVE, ttl_dns_cache=None)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        self._poller = asyncio.create_task(
            poll_upstream(self.session, self.upstream + "/health", self.state, self.config.poll_interval)
        )

    async def stop(self, app: web.Application) -> None:
        if self._poller:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        if self.session:
            await self.session.close()

    # --- facts -----------------------------------------------------------------------------------
    def served_model(self) -> str:
        return self._plan.served_model_name if self._plan else self.settings.served_model_name

    def health(self) -> HealthBody:
        status = read_status(self.config.paths.vllm_status_file)
        body = health_report(self.state.ready, self.state.ever_ready, status, self.served_model())
        self.metrics.upstream_up.set(1 if self.state.ready else 0)
        return body

    # --- entry point -----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path = request.path
        status = 500
        try:
            response = await self.dispatch(request, path)
            status = response.status
            return response
        except web.HTTPRequestEntityTooLarge:
            status = 413
            return self.too_large()
        except BodyTooLarge:
            status = 413
            return self.too_large()
        except web.HTTPException as exc:  # aiohttp's own 4xx (bad body encoding, ...): JSON instead of text
            status = exc.status
            return json_error(exc.status, exc.reason, "BadRequestError" if exc.status < 500 else "ServerError")
        finally:
            self.metrics.observe(path, status, time.perf_counter() - started)

    async def dispatch(self, request: web.Request, path: str) -> web.StreamResponse:
        if path in PUBLIC_PATHS:
            return self.health_response(path)
        if path.startswith(STATIC_PREFIX):
            return self.static_response(path[len(STATIC_PREFIX) :])

        credential: auth.Credential | None = None
        if self.auth_enabled:
            headers = request.headers
            query_token = request.query.get(auth.TOKEN_PARAM) if request.query_string else None
            cookie_token = request.cookies.get(self.cookie) if hdrs.COOKIE in headers else None
            credential = auth.authenticate(self.checker, headers.get(hdrs.AUTHORIZATION), query_token, cookie_token)
            if credential is None:
                presented = bool(query_token or cookie_token or headers.get(hdrs.AUTHORIZATION))
                return self.unauthorized(request, presented)
            if credential.source in auth.AMBIENT_SOURCES and request.method not in SAFE_METHODS:
                own_origin = f"{request.scheme}://{request.host}"
                if auth.is_cross_site(headers.get("Sec-Fetch-Site"), headers.get(hdrs.ORIGIN), own_origin):
                    return json_error(
                        403, "cross-site request refused: send the token in an Authorization header", "Forbidden"
                    )
            if credential.source == "query" and self.is_navigation(request):
                return self.set_cookie_redirect(request, credential.token)

        if path == "/" and request.method in ("GET", "HEAD"):
            return self.landing_response(request, credential)
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            return await self.metrics_response(request)
        return await self.proxy(request)

    # --- auth responses --------------------------------------------------------------------------
    @staticmethod
    def is_browser(request: web.Request) -> bool:
        return "text/html" in request.headers.get(hdrs.ACCEPT, "")

    def is_navigation(self, request: web.Request) -> bool:
        if request.method not in ("GET", "HEAD"):
            return False
        mode = request.headers.get("Sec-Fetch-Mode")
        return mode == "navigate" if mode else self.is_browser(request)

    def unauthorized(self, request: web.Request, presented: bool) -> web.Response:
        headers = {hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE, hdrs.CACHE_CONTROL: "no-store"}
        if self.is_browser(request) and request.method in ("GET", "HEAD"):
            page = landing.render_login(request.path, wrong_token=presented)
            return web.Response(
                status=401, text=page, content_type="text/html", headers={**headers, **landing.SECURITY_HEADERS}
            )
        message = (
            "invalid token"
            if presented
            else "missing token: send 'Authorization: Bearer <token>' (on Vast.ai the token is $OPEN_BUTTON_TOKEN)"
        )
        return json_error(401, message, "Unauthorized", headers)

    def set_cookie_redirect(self, request: web.Request, token: str) -> web.Response:
        query = strip_token_param(request.rel_url.raw_query_string)
        location = request.rel_url.raw_path + (f"?{query}" if query else "")
        response = web.Response(status=302, headers={hdrs.LOCATION: location, hdrs.CACHE_CONTROL: "no-store"})
        response.set_cookie(self.cookie, token, **self.cookie_attrs)  # type: ignore[arg-type]
        return response

    # --- our own routes --------------------------------------------------------------------------
    def health_response(self, path: str) -> web.Response:
        health = self.health()
        headers = {hdrs.CACHE_CONTROL: "no-store"}
        if health.status is not HealthState.READY:
            headers[hdrs.RETRY_AFTER] = str(RETRY_AFTER_SECONDS[health.status])
        body = {"status": "ready"} if path == "/ping" and health.status is HealthState.READY else health.to_json()
        return web.json_response(body, status=health.http_status, headers=headers)

    def static_response(self, name: str) -> web.Response:
        asset = self.static.get(name)
        if asset is None:
            return json_error(404, "not found", "NotFound")
        content, content_type = asset
        return web.Response(
            body=content,
            headers={
                hdrs.CONTENT_TYPE: content_type,
                hdrs.CACHE_CONTROL: "public, max-age=3600",
                "X-Content-Type-Options": "nosniff",
            },
        )

    def landing_response(self, request: web.Request, credential: auth.Credential | None) -> web.Response:
        health = self.health().to_json()
        facts = landing.PageFacts(
            base_url=f"{request.scheme}://{request.host}",
            token=credential.token if credential else None,
            model=self.served_model(),
            health=health,
            plan=self._plan.to_json() if self._plan else {},
            ssh_command=tunnel_command(self.settings, self.config.env),
            vllm_port=self.settings.vllm_port,
        )
        return web.Response(
            text=landing.render_landing(facts), content_type="text/html", headers=landing.SECURITY_HEADERS
        )

    async def metrics_response(self, request: web.Request) -> web.Response:
        self.metrics.upstream_up.set(1 if self.state.ready else 0)
        parts = [self.metrics.render()]
        if self.state.ready and self.session is not None:
            try:
                async with self.session.get(self.upstream + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as up:
                    if up.status == 200:
                        parts.append(await up.read())
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("could not read vLLM's /metrics: %s", exc)
        return web.Response(
            body=b"".join(parts), headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4; charset=utf-8"}
        )

    # --- the proxy -------------------------------------------------------------------------------
    def too_large(self) -> web.Response:
        return json_error(
            413,
            f"request body larger than MAX_REQUEST_BYTES ({self.max_body} bytes)",
            "RequestEntityTooLarge",
            {hdrs.CONNECTION: "close"},
        )

    def not_ready(self) -> web.Response:
        health = self.health()
        if health.status is HealthState.READY:  # the poller has not caught up with a connection error yet
            health = HealthBody(HealthState.DOWN, reason=self.state.last_error or "vLLM is not answering")
        message = {
            HealthState.LOADING: f"the model is loading ({health.phase}); retry shortly",
            HealthState.FAILED: f"vLLM failed: {health.reason}",
        }.get(health.status, f"vLLM is not answering ({health.reason}); retry shortly")
        payload = {
            "error": {"message": message, "type": "ServiceUnavailable", "code": 503},
            "status": str(health.status),
        }
        retry = str(RETRY_AFTER_SECONDS[health.status])
        return web.json_response(payload, status=503, headers={hdrs.RETRY_AFTER: retry, hdrs.CACHE_CONTROL: "no-store"})

    async def request_body(self, request: web.Request) -> bytes | AsyncIterator[bytes] | None:
        if not request.body_exists:
            return None
        length = request.content_length
        if length is not None and length > self.max_body:
            raise BodyTooLarge()
        if self.truncation is not None and request.method == "POST" and request.path.rstrip("/") in TRUNCATION_ROUTES:
            return await self.truncated_body(request)
        if length is not None and length <= SMALL_BODY:
            data = await request.read()
            if length <= JSON_CHECK_LIMIT and "json" in request.headers.get(hdrs.CONTENT_TYPE, ""):
                json.loads(data)  # ValueError -> 400 in proxy()
            return data
        return limited(request.content, self.max_body)

    async def truncated_body(self, request: web.Request) -> bytes:
        """A rerank/score body with the default truncation fields added (see truncation.py).

        Read whole (bounded by MAX_REQUEST_BYTES through client_max_size): the fields go into the JSON.
        """
        data = await request.read()
        body = json.loads(data)  # ValueError -> 400 in proxy()
        changed = apply_default_truncation(request.path, body, self.truncation)
        return data if changed is body else json.dumps(changed).encode()

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        if not self.state.ready:
            return self.not_ready()
        raw_path = request.rel_url.raw_path
        if not raw_path.startswith("/"):
            return json_error(400, "request target must be a path", "BadRequestError")
        query = request.rel_url.raw_query_string
        if query and auth.TOKEN_PARAM in query:
            query = strip_token_param(query)
        url = URL(self.upstream + raw_path + (f"?{query}" if query else ""), encoded=True)
        try:
            data = await self.request_body(request)
        except ValueError as exc:
            return json_error(400, f"request body is not valid JSON: {exc}", "BadRequestError")
        except RecursionError:  # json.loads of something like '[[[[...' 100,000 levels deep
            return json_error(400, "request body is not valid JSON: nested too deeply", "BadRequestError")
        except ConnectionResetError:
            return client_gone()
        headers = forward_request_headers(request.headers, self.cookie)
        assert self.session is not None
        replayable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            try:
                upstream = await self.session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False
                )
                break
            except aiohttp.ClientConnectorError as exc:  # nothing listens: vLLM is down
                return self.upstream_failed(exc, down=True)
            except aiohttp.ClientError as exc:
                if caused_by(exc, BodyTooLarge):  # raised by limited() while the body was being sent
                    raise BodyTooLarge() from exc
                if isinstance(exc, aiohttp.ClientPayloadError):
                    return json_error(400, f"could not read the request body: {exc}", "BadRequestError")
                if request.transport is None or request.transport.is_closing():
                    return client_gone()  # the client hung up while its body was streamed: not vLLM's fault
                # A pooled keep-alive connection can be closed by vLLM just as we reuse it: retry once.
                if (
                    attempt == 1
                    and replayable
                    and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
                ):
                    continue
                return self.upstream_failed(exc, down=False)
        response: web.StreamResponse | None = None
        try:
            response_headers = forward_response_headers(upstream.headers)
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY:
                body = await upstream.read()
                return web.Response(status=upstream.status, body=body, headers=response_headers)
            response = web.StreamResponse(status=upstream.status, headers=response_headers)
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if response is not None and response.prepared:
                raise  # headers already sent: all we can do is cut the connection
            return self.upstream_failed(exc, down=False)
        finally:
            upstream.release()

    def upstream_failed(self, exc: BaseException, down: bool) -> web.Response:
        """503 JSON for a request vLLM could not answer. A refused connection means vLLM is gone: /health
        turns 503 at once; a dropped connection may be one request's bad luck, so the poller decides."""
        reason = f"{type(exc).__name__}: {exc}"
        self.metrics.upstream_errors.inc()
        if down:
            self.state.mark_down(reason)
        else:
            self.state.last_error = reason
            log.warning("a proxied request lost its connection to vLLM: %s", reason)
        return self.not_ready()


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own refusals in JSON too: a request target that is not a path (`CONNECT host:443`,
    `OPTIONS *`) matches no route, and aiohttp would answer it in plain text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:  # our catch-all route matches every path: the target was not a path
            return json_error(404, "not found: the request target must be a path such as /v1/rerank", "NotFound")
        return json_error(exc.status, exc.text or exc.reason, "BadRequestError" if exc.status < 500 else "ServerError")


async def expect_continue(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue` as aiohttp answers it; any other expectation a JSON 417 (not plain text)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != aiohttp.HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return json_error(417, f"unsupported Expect header: {expect!r} (only 100-continue)", "ExpectationFailed")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not the response: the real one may still be sent
    return None


def build_app(config: GatewayConfig) -> web.Application:
    gateway = Gateway(config)
    app = web.Application(client_max_size=config.settings.max_request_bytes, middlewares=[json_errors])
    app[GATEWAY_KEY] = gateway
    app.on_startup.append(gateway.start)
    app.on_cleanup.append(gateway.stop)
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=expect_continue)
    return app


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


def _read_plan(path: Path) -> Plan | None:
    """The stack's plan, read once at start (the stack writes it before any service starts and never
    changes it while it runs); None for a gateway started on its own, in front of a vLLM of the user's."""
    if not path.exists():
        return None
    return read_plan(path)


def _planless_truncation(settings: Settings) -> TruncationPolicy | None:
    """Without a plan the model is unknown: the safe default is to cut a too long pair to the limit."""
    return decide_truncation(settings.truncate, split=False, max_model_len=None, instruction_chars=0)
