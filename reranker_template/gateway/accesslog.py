"""The access log: one line per request, tokens redacted, written in batches.

Going through `logging` with two handlers (stdout and the log file), each flushing per record, cost
~170 us per request: 40% of the gateway's CPU time (measured, BENCHMARKS.md). Here a line is formatted
with a cached timestamp and appended to a list; a background task writes the batch to every sink twice a
second. The lines look like the other log lines and reach the same two places.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from reranker_template.gateway.auth import redact

FLUSH_INTERVAL = 0.5  # seconds
MAX_PENDING = 2000  # lines; written at once beyond this


class AccessLines:
    """Pending access-log lines and the streams they go to."""

    def __init__(self, streams: list[TextIO]) -> None:
        self.streams = streams
        self.pending: list[str] = []
        self._second = -1
        self._stamp = ""

    def timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def add(self, line: str) -> None:
        self.pending.append(line)
        if len(self.pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending = []
        for stream in self.streams:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed or broken sink must not take the gateway down
                pass

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                self.flush()
        finally:
            self.flush()


def access_logger_class(lines: AccessLines) -> type[AbstractAccessLogger]:
    """An aiohttp access logger class bound to `lines` (aiohttp instantiates the class itself)."""

    class AccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            path = request.path_qs
            if "=" in path:
                path = redact(path)
            lines.add(
                f'{lines.timestamp()} gateway INFO {request.remote} "{request.method} {path}" '
                f"{response.status} {time * 1000:.1f} ms\n"
            )

        @property
        def enabled(self) -> bool:
            return True

    return AccessLogger
