"""The gateway's HTTP application: auth on every route, /health, the landing page, /metrics, the proxy.

One catch-all route and one handler do the routing: cheaper per request than middleware chains
(BENCHMARKS.md, Gateway). This module decides what answers a request (our own routes, an auth
refusal, or vLLM through `proxy.Proxy`); `responses` holds the one error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from reranker_template.gateway import auth, landing, responses
from reranker_template.gateway.health import UpstreamState, health_report, poll_upstream
from reranker_template.gateway.metrics import GatewayMetrics
from reranker_template.gateway.proxy import BodyTooLarge, Proxy, UpstreamFailure
from reranker_template.gateway.responses import ErrorType
from reranker_template.paths import Paths
from reranker_template.plan.contract import Plan, TruncationPolicy, read_plan
from reranker_template.plan.truncation import decide_truncation
from reranker_template.protocol import RETRY_AFTER_SECONDS, HealthBody, HealthState
from reranker_template.serve.sshd import tunnel_command
from reranker_template.serve.status import read_status
from reranker_template.settings import Settings

log = logging.getLogger("reranker.gateway")

PUBLIC_PATHS = frozenset({"/health", "/ping"})
STATIC_PREFIX = "/_gateway/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_METHODS = frozenset({"GET", "HEAD"})
WWW_AUTHENTICATE = 'Bearer realm="reranker", charset="UTF-8"'
MISSING_TOKEN = "missing token: send 'Authorization: Bearer <token>' (on Vast.ai the token is $OPEN_BUTTON_TOKEN)"


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


def is_browser(request: web.Request) -> bool:
    return "text/html" in request.headers.get(hdrs.ACCEPT, "")


def is_navigation(request: web.Request) -> bool:
    """A browser opening a page (not a script's fetch): where a `?token=` becomes a cookie."""
    if request.method not in PAGE_METHODS:
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    return mode == "navigate" if mode else is_browser(request)


class Gateway:
    """Request handling. State lives here (per application), never in module globals."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.checker = auth.TokenChecker(config.tokens)
        self.auth_enabled = config.settings.enable_auth
        self.cookie = auth.cookie_name(config.env, config.settings.gateway_port)
        self.cookie_attributes = auth.CookieAttributes(secure=config.https)
        self.state = UpstreamState()
        self.metrics = GatewayMetrics()
        self.upstream = config.upstream
        self.max_body = config.settings.max_request_bytes
        self.static = landing.static_assets()
        self._poller: asyncio.Task[None] | None = None
        # The stack writes plan.json before any service starts and never changes it while it runs:
        # read it once, not on every /health and page.
        self._plan = _read_plan(config.paths.plan_file)
        truncation = self._plan.truncation if self._plan else _planless_truncation(self.settings)
        self.proxy = Proxy(self.upstream, self.max_body, truncation, self.cookie)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self, app: web.Application) -> None:
        session = self.proxy.open()
        self._poller = asyncio.create_task(
            poll_upstream(session, self.upstream + "/health", self.state, self.config.poll_interval)
        )

    async def stop(self, app: web.Application) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.proxy.close()

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
        response: web.StreamResponse | None = None
        try:
            response = responses.in_route_shape(path, await self.answer(request, path))
            return response
        finally:  # 500: what aiohttp answers for an exception that escapes
            self.metrics.observe(path, response.status if response else 500, time.perf_counter() - started)

    async def answer(self, request: web.Request, path: str) -> web.StreamResponse:
        try:
            return await self.dispatch(request, path)
        except (web.HTTPRequestEntityTooLarge, BodyTooLarge):
            return responses.too_large(self.max_body)
        except web.HTTPException as exc:  # one aiohttp raised in our handler: JSON instead of its text
            return responses.from_http_exception(exc)

    async def dispatch(self, request: web.Request, path: str) -> web.StreamResponse:
        if path in PUBLIC_PATHS:
            return self.health_response(path)
        if path.startswith(STATIC_PREFIX):
            return self.static_response(path[len(STATIC_PREFIX) :])
        credential: auth.Credential | None = None
        if self.auth_enabled:
            checked = self.authorize(request)
            if isinstance(checked, web.Response):
                return checked
            credential = checked
        if path == "/" and request.method in PAGE_METHODS:
            return self.landing_response(request, credential)
        if path == "/metrics" and request.method in PAGE_METHODS:
            return await self.metrics_response(request)
        return await self.forward(request)

    # --- auth responses --------------------------------------------------------------------------
    def authorize(self, request: web.Request) -> auth.Credential | web.Response:
        """The request's valid credential, or the answer instead: 401, a cross-site 403, or for a browser
        that opened `?token=` a redirect that sets the cookie and takes the token out of the address."""
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
                message = "cross-site request refused: send the token in an Authorization header"
                return responses.json_error(403, message, ErrorType.FORBIDDEN)
        if credential.source is auth.Source.QUERY and is_navigation(request):
            return self.set_cookie_redirect(request, credential.token)
        return credential

    def unauthorized(self, request: web.Request, presented: bool) -> web.Response:
        headers: dict[str, str] = {hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE, hdrs.CACHE_CONTROL: "no-store"}
        if is_browser(request) and request.method in PAGE_METHODS:
            page = landing.render_login(request.path, wrong_token=presented)
            return web.Response(
                status=401, text=page, content_type="text/html", headers={**headers, **landing.SECURITY_HEADERS}
            )
        message = "invalid token" if presented else MISSING_TOKEN
        return responses.json_error(401, message, ErrorType.UNAUTHORIZED, headers)

    def set_cookie_redirect(self, request: web.Request, token: str) -> web.Response:
        query = auth.strip_token_param(request.rel_url.raw_query_string)
        location = request.rel_url.raw_path + (f"?{query}" if query else "")
        response = web.Response(status=302, headers={hdrs.LOCATION: location, hdrs.CACHE_CONTROL: "no-store"})
        attributes = self.cookie_attributes
        response.set_cookie(
            self.cookie,
            token,
            max_age=attributes.max_age,
            path=attributes.path,
            httponly=attributes.httponly,
            samesite=attributes.samesite,
            secure=attributes.secure or None,  # None: no Secure attribute at all over plain HTTP
        )
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
            return responses.json_error(404, "not found", ErrorType.NOT_FOUND)
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
        facts = landing.PageFacts(
            base_url=f"{request.scheme}://{request.host}",
            token=credential.token if credential else None,
            model=self.served_model(),
            health=self.health(),
            plan=self._plan,
            ssh_command=tunnel_command(self.settings, self.config.env),
            vllm_port=self.settings.vllm_port,
        )
        return web.Response(
            text=landing.render_landing(facts), content_type="text/html", headers=landing.SECURITY_HEADERS
        )

    async def metrics_response(self, request: web.Request) -> web.Response:
        self.metrics.upstream_up.set(1 if self.state.ready else 0)
        parts = [self.metrics.render()]
        session = self.proxy.session
        if self.state.ready and session is not None:
            try:
                async with session.get(self.upstream + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as up:
                    if up.status == 200:
                        parts.append(await up.read())
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("could not read vLLM's /metrics: %s", exc)
        return web.Response(
            body=b"".join(parts), headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4; charset=utf-8"}
        )

    # --- vLLM's routes ---------------------------------------------------------------------------
    async def forward(self, request: web.Request) -> web.StreamResponse:
        if not self.state.ready:
            return self.not_ready()
        answer = await self.proxy.forward(request)
        if isinstance(answer, UpstreamFailure):
            return self.upstream_failed(answer)
        return answer

    def not_ready(self) -> web.Response:
        health = self.health()
        if health.status is HealthState.READY:  # the poller has not caught up with a connection error yet
            health = HealthBody(HealthState.DOWN, reason=self.state.last_error or "vLLM is not answering")
        return responses.not_ready(health)

    def upstream_failed(self, failure: UpstreamFailure) -> web.Response:
        """503 for a request vLLM could not answer. A refused connection means vLLM is gone: /health
        turns 503 at once; a dropped connection may be one request's bad luck, so the poller decides."""
        self.metrics.upstream_errors.inc()
        if failure.down:
            self.state.mark_down(failure.reason)
        else:
            self.state.last_error = failure.reason
            log.warning("a proxied request lost its connection to vLLM: %s", failure.reason)
        return self.not_ready()


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals in JSON too: a request target that is not a path (`CONNECT host:443`,
    `OPTIONS *`) matches no route, and aiohttp would answer it in plain text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:  # our catch-all route matches every path: the target was not a path
            message = "not found: the request target must be a path such as /v1/rerank"
            return responses.json_error(404, message, ErrorType.NOT_FOUND)
        return responses.from_http_exception(exc)


async def expect_continue(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue` as aiohttp answers it; any other expectation a JSON 417 (not plain text)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != aiohttp.HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        message = f"unsupported Expect header: {expect!r} (only 100-continue)"
        return responses.json_error(417, message, ErrorType.EXPECTATION_FAILED)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not the response: the real one may still be sent
    return None


def build_app(config: GatewayConfig) -> web.Application:
    gateway = Gateway(config)
    app = web.Application(client_max_size=config.settings.max_request_bytes, middlewares=[json_errors])
    app.on_startup.append(gateway.start)
    app.on_cleanup.append(gateway.stop)
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=expect_continue)
    return app


def _read_plan(path: Path) -> Plan | None:
    """The stack's plan, read once at start (the stack writes it before any service starts and never
    changes it while it runs); None for a gateway started on its own, in front of a vLLM of the user's."""
    if not path.exists():
        return None
    return read_plan(path)


def _planless_truncation(settings: Settings) -> TruncationPolicy | None:
    """Without a plan the model is unknown: the safe default is to cut a too long pair to the limit."""
    return decide_truncation(settings.truncate, split=False, max_model_len=None, instruction_chars=0)
