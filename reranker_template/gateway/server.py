"""Run the gateway process: logging to stdout and the log file, token set-up, TLS, the aiohttp server.

This is what `reranker gateway` (the supervisord program) calls. Decisions (which token, which URL to
print) are small pure functions so they are tested without starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TextIO

from aiohttp import web

from reranker_template.gateway import auth
from reranker_template.gateway.accesslog import AccessLines, access_logger_class
from reranker_template.gateway.app import GatewayConfig, build_app
from reranker_template.paths import Paths
from reranker_template.settings import Settings

log = logging.getLogger("reranker.gateway")
LOG_FORMAT = "%(asctime)s gateway %(levelname)s %(message)s"
VERBATIM = {"verbatim": True}  # `extra` of a log record that RedactingFormatter must not touch

AUTH_OFF_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! ENABLE_AUTH=false: the gateway accepts requests WITHOUT A TOKEN.            !!
!! Anyone who can reach port %-5d can use this server and run up your bill.   !!
!! Use this only behind your own firewall or SSH tunnel.                       !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


class RedactingFormatter(logging.Formatter):
    """Credentials replaced in every line: aiohttp logs the raw bytes of a request it cannot parse (its
    request line, a header that is too long), which may carry the client's token. Our records marked
    `verbatim` (the token links of `announce`) are left as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if getattr(record, "verbatim", False) else auth.redact_log(text)


def setup_logging(log_file: Path) -> list[TextIO]:
    """Log lines go to stdout (what Vast's log view and supervisord show) and to the gateway's log file.
    Returns both streams, for the access log (which writes to them in batches)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = RedactingFormatter(LOG_FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    for handler in (logging.StreamHandler(sys.stdout), file_handler):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    assert file_handler.stream is not None  # FileHandler opens its file at construction unless delay=True
    return [sys.stdout, file_handler.stream]


def add_access_log(app: web.Application, lines: AccessLines) -> None:
    async def flusher(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(lines.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(flusher)


def public_base_url(settings: Settings, env: Mapping[str, str]) -> str:
    """The URL a user outside reaches the gateway at: Vast's public address and mapped port when known."""
    scheme = "https" if settings.enable_https else "http"
    mapped = env.get(f"VAST_TCP_PORT_{settings.gateway_port}", "").strip()
    public_ip = env.get("PUBLIC_IPADDR", "").strip()
    if public_ip and mapped:
        return f"{scheme}://{public_ip}:{mapped}"
    host = settings.gateway_host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.gateway_port}"


def effective_tokens(settings: Settings, paths: Paths) -> tuple[tuple[str, ...], bool]:
    """(accepted tokens, generated?): the configured ones, else the one kept in the state directory."""
    return auth.local_tokens(settings.tokens, paths.token_file, create=True), not settings.tokens


def announce(settings: Settings, env: Mapping[str, str], generated_token: str | None) -> None:
    base = public_base_url(settings, env)
    if not settings.enable_auth:
        for line in (AUTH_OFF_WARNING % settings.gateway_port).splitlines():
            log.warning(line)
        log.info("Open %s/", base)
    elif generated_token:
        # The one deliberate exception to "no tokens in logs": nobody configured a token, so the user
        # needs this link to get in. `reranker token` prints it again.
        log.info("No token configured (OPEN_BUTTON_TOKEN, API_KEYS, WEB_PASSWORD): generated one.")
        log.info("Open %s/?token=%s", base, generated_token, extra=VERBATIM)
    else:
        log.info(
            "Open %s/?token=<your token> (OPEN_BUTTON_TOKEN, API_KEYS, WEB_PASSWORD or VLLM_API_KEY); "
            "`reranker token` prints the full link",
            base,
            extra=VERBATIM,
        )


def run(settings: Settings, paths: Paths, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    lines = AccessLines(setup_logging(paths.log_file("gateway")))
    tokens, generated = effective_tokens(settings, paths) if settings.enable_auth else (settings.tokens, False)
    ssl_context: ssl.SSLContext | None = None
    if settings.enable_https:
        from reranker_template.gateway.tls import server_context

        ssl_context, _ = server_context(settings, paths.state_dir, env)
    config = GatewayConfig(settings=settings, paths=paths, tokens=tokens, env=env, https=ssl_context is not None)
    app = build_app(config)
    add_access_log(app, lines)
    log.info(
        "gateway on %s:%d -> vLLM on 127.0.0.1:%d (auth %s, %s, max request %d bytes)",
        settings.gateway_host,
        settings.gateway_port,
        settings.vllm_port,
        "on" if settings.enable_auth else "OFF",
        "https" if ssl_context else "http",
        settings.max_request_bytes,
    )
    announce(settings, env, tokens[0] if generated else None)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop  # about 20% more requests/s than asyncio's default loop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    try:
        web.run_app(
            app,
            host=settings.gateway_host,
            port=settings.gateway_port,
            ssl_context=ssl_context,
            access_log_class=access_logger_class(lines),
            access_log=logging.getLogger("reranker.gateway.access"),  # unused by our class, but must be set
            print=None,
            backlog=1024,
            shutdown_timeout=5,
            loop=loop,
        )
    except OSError as exc:
        log.error(
            "cannot listen on %s:%d: %s (is another gateway running? set GATEWAY_PORT)",
            settings.gateway_host,
            settings.gateway_port,
            exc.strerror or exc,
        )
        return 1
    return 0
