"""One loopback HTTP server for every test that needs something to answer HTTP: a stand-in for vLLM, the
Hugging Face hub, a script host, the gateway's /health.

The standard library's `ThreadingHTTPServer` on 127.0.0.1 (a free port, or a given one), served from a
thread, speaking HTTP/1.1 with keep-alive. A test says what to answer:

    with LoopbackServer() as server:
        server.answer("/health", Reply.json({"status": "ok"}))
        server.answer("/slow", Reply(body=b"late", delay=2.0))
        server.answer("/stream", Reply(chunks=[b"a" * 65536] * 10))  # chunked, length unknown
        ... server.url ... server.requests  # every request, in order

or hands the whole decision to one function (`LoopbackServer(handler)`). `stop()` also cuts the open
keep-alive connections, so a client sees the server gone as it would see a dead process.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice; another process may take it later)."""
    (port,) = free_ports(1)
    return port


def free_ports(count: int) -> tuple[int, ...]:
    """`count` different free ports: all are held at once while the kernel picks, so none repeats (two
    `free_port()` calls in a row can get the same port back, as soon as the first socket is closed)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return tuple(int(sock.getsockname()[1]) for sock in sockets)


@dataclass(frozen=True)
class Request:
    """One request as the server received it (a chunked body already decoded)."""

    method: str
    target: str  # the raw request target: path and query, as sent
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What to answer. `chunks` streams the body with chunked encoding (no Content-Length) instead of `body`;
    `delay` waits that many seconds before the status line."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunks: Iterable[bytes] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


Handler = Callable[[Request], Reply]
NOT_FOUND = Reply.json({"error": "not found"}, status=404)


def _not_found(_request: Request) -> Reply:
    return NOT_FOUND


class _Server(ThreadingHTTPServer):
    """Keeps its open connections, so `stop` can cut them (a keep-alive client must not outlive the server)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, owner: LoopbackServer, tls: ssl.SSLContext | None, host: str) -> None:
        self.owner = owner
        self.tls = tls
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.tls is not None:  # the handshake happens on first read, in the connection's own thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request (or speaks plain HTTP to TLS) is not a test failure

    def cut_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK, 40 ms a request on keep-alive connections (a stand-in must not be the slow part).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def serve(self) -> None:
        request = Request(self.command, self.path, dict(self.headers.items()), self.read_body())
        reply = self.server.owner.record_and_route(request)
        if reply.delay:
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for chunk in reply.chunks:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = serve


class LoopbackServer:
    """An HTTP server for one test, on 127.0.0.1 unless `host` says otherwise: answers by path (`answer`), else by
    `handler`."""

    def __init__(
        self, handler: Handler = _not_found, *, port: int = 0, tls: ssl.SSLContext | None = None, host: str = LOOPBACK
    ) -> None:
        self.handler = handler
        self.routes: dict[str, Reply | Handler] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server(port, self, tls, host)  # host "0.0.0.0": containers reach it too
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._server.tls is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def answer(self, path: str, reply: Reply | Handler) -> LoopbackServer:
        """Answer every request for `path` (query ignored) with `reply`, or with what `reply(request)` returns."""
        self.routes[path] = reply
        return self

    def record_and_route(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        route = self.routes.get(request.path, self.handler)
        return route if isinstance(route, Reply) else route(request)

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection; the port is free again when this returns."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()
        self._server.cut_connections()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
