"""Is vLLM ready? The upstream state, its background poller, and the /health answer built from it.

Two sources: vLLM's own GET /health (polled about once a second, and marked down at once when a proxied
request cannot connect), and the status file the vLLM launcher writes (phase, reason, quality check), which
says *why* vLLM is not answering yet: provisioning, downloading, starting, failed, stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger("reranker.gateway")

LOADING_PHASES = ("provisioning", "downloading", "starting")
RETRY_AFTER = {"loading": 10, "down": 5, "failed": 60}


@dataclass
class UpstreamState:
    """What the gateway currently believes about vLLM. Mutated only by the poller and the proxy."""

    ready: bool = False
    ever_ready: bool = False
    since: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    last_error: str | None = None

    def mark_ready(self) -> None:
        if not self.ready:
            now = time.monotonic()
            took = f" after {now - self.started:.0f} s" if not self.ever_ready else ""
            log.info("vLLM is ready%s: proxying requests", took)
            self.ready, self.ever_ready, self.since, self.last_error = True, True, now, None

    def mark_down(self, reason: str) -> None:
        if self.ready:
            log.warning("vLLM stopped answering (%s): answering 503 until it is back", reason)
            self.ready, self.since = False, time.monotonic()
        self.last_error = reason


def read_json_file(path: Path) -> dict[str, Any]:
    """A small JSON object written by another process; {} when missing, partial or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def health_report(ready: bool, ever_ready: bool, status: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of /health. Pure: the upstream state and the launcher's status file decide."""
    phase = status.get("phase")
    common = {"model": model, "phase": phase, "quality_check": status.get("quality_check")}
    if ready:
        return 200, {"status": "ready", **common, "phase": "ready"}
    if phase == "failed":
        return 503, {"status": "failed", **common, "reason": status.get("reason") or "vLLM failed to start"}
    if phase == "stopped":
        return 503, {"status": "down", **common, "reason": status.get("reason") or "vLLM is stopped"}
    if phase in LOADING_PHASES or (phase in (None, "ready") and not ever_ready):
        body = {"status": "loading", **common, "phase": phase or "starting"}
        if status.get("reason"):
            body["reason"] = status["reason"]
        return 503, body
    return 503, {"status": "down", **common, "reason": status.get("reason") or "vLLM is not answering"}


async def probe(session: aiohttp.ClientSession, url: str, timeout: float) -> str | None:
    """None when vLLM's /health says 200; otherwise why not."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return None if response.status == 200 else f"/health answered {response.status}"
    except TimeoutError:
        return f"/health did not answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def poll_upstream(
    session: aiohttp.ClientSession,
    url: str,
    state: UpstreamState,
    interval: float = 1.0,
    timeout: float = 5.0,
) -> None:
    """Forever: probe vLLM's /health and update `state`. A busy vLLM may answer slowly, so one timeout
    while ready is not enough to call it down; a refused connection is."""
    slow = 0
    while True:
        problem = await probe(session, url, timeout)
        if problem is None:
            slow = 0
            state.mark_ready()
        elif "did not answer" in problem and state.ready and slow < 1:
            slow += 1
        else:
            slow = 0
            state.mark_down(problem)
        await asyncio.sleep(interval if state.ready else interval / 2)
