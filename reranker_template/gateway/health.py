"""Is vLLM ready? The upstream state, its background poller, and the /health answer built from it.

Two sources: vLLM's own GET /health (polled about once a second, and marked down at once when a proxied
request cannot connect), and the status file the vLLM launcher writes (phase, reason, quality check), which
says *why* vLLM is not answering yet: provisioning, downloading, starting, failed, stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

import aiohttp

from reranker_template.protocol import HealthBody, HealthState
from reranker_template.serve.status import Phase, VllmStatus

log = logging.getLogger("reranker.gateway")
# Seconds between probes of vLLM's /health while it is not ready (start-up, or down): see poll_upstream.
NOT_READY_INTERVAL = 0.1


@dataclass
class UpstreamState:
    """What the gateway currently believes about vLLM. Mutated only by the poller, and by the
    application when a proxied request finds vLLM gone."""

    ready: bool = False
    ever_ready: bool = False
    started: float = field(default_factory=time.monotonic)
    last_error: str | None = None

    def mark_ready(self) -> None:
        if not self.ready:
            took = f" after {time.monotonic() - self.started:.0f} s" if not self.ever_ready else ""
            log.info("vLLM is ready%s: proxying requests", took)
            self.ready, self.ever_ready, self.last_error = True, True, None

    def mark_down(self, reason: str) -> None:
        if self.ready:
            log.warning("vLLM stopped answering (%s): answering 503 until it is back", reason)
            self.ready = False
        self.last_error = reason


def health_report(ready: bool, ever_ready: bool, status: VllmStatus | None, model: str) -> HealthBody:
    """The /health body. Pure: the upstream state and the launcher's status file decide.

    vLLM answering its own /health wins; otherwise the launcher's phase says why it does not answer
    (no status file yet counts as starting).
    """
    phase = status.phase if status else None
    reason = status.reason if status else None
    quality = str(status.quality_check) if status else None

    def body(state: HealthState, shown_phase: Phase | None = phase, why: str | None = None) -> HealthBody:
        return HealthBody(state, model, str(shown_phase) if shown_phase else None, quality, why)

    if ready:
        return body(HealthState.READY, Phase.READY)
    if phase is Phase.FAILED:
        failed = body(HealthState.FAILED, why=reason or "vLLM failed to start")
        return replace(failed, final=bool(status and status.gave_up))
    if phase is Phase.STOPPED:
        return body(HealthState.DOWN, why=reason or "vLLM is stopped")
    if (phase is not None and phase.loading) or (phase in (None, Phase.READY) and not ever_ready):
        return body(HealthState.LOADING, phase or Phase.STARTING, reason)
    return body(HealthState.DOWN, why=reason or "vLLM is not answering")


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
    while ready is not enough to call it down; a refused connection is. Until vLLM answers, ask every
    NOT_READY_INTERVAL: a refused connection costs nothing, and readiness is seen at most that late."""
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
        await asyncio.sleep(interval if state.ready else min(interval, NOT_READY_INTERVAL))
