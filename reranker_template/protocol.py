"""The gateway's `/health` body: one type, written by the gateway and read by every client of ours.

Readers: `RerankerClient.health`, `reranker vast` (waiting for an instance), the image HEALTHCHECK and
the landing page. Stdlib only, so the image's health check and the client import nothing heavy.

The body: `{"status": ..., "model": ..., "phase": ..., "quality_check": ..., "reason": ...}`; HTTP 200
only when status is "ready", 503 otherwise (with Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class HealthState(StrEnum):
    """What a user needs to know: can I send requests now, soon, or not without help?"""

    READY = "ready"
    LOADING = "loading"  # provisioning, downloading or starting: retry shortly
    DOWN = "down"  # vLLM is not answering; supervisord restarts it
    FAILED = "failed"  # vLLM gave up; `reason` says what to fix


# Seconds a client should wait before asking again, sent as Retry-After with each 503.
RETRY_AFTER_SECONDS = {HealthState.LOADING: 10, HealthState.DOWN: 5, HealthState.FAILED: 60}


@dataclass(frozen=True)
class HealthBody:
    status: HealthState
    model: str | None = None
    phase: str | None = None  # serve.status.Phase, as the launcher last reported it
    quality_check: str | None = None  # serve.status.QualityState
    reason: str | None = None
    # FAILED only: the launcher gave up (a retry cannot help); waiting longer is pointless.
    final: bool = False

    @property
    def http_status(self) -> int:
        return 200 if self.status is HealthState.READY else 503

    @property
    def detail(self) -> str | None:
        """The reason, else the loading phase: the one phrase to show after the state."""
        return self.reason or self.phase

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": str(self.status),
            "model": self.model,
            "phase": self.phase,
            "quality_check": self.quality_check,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        if self.status is HealthState.FAILED:
            body["final"] = self.final
        return body

    @classmethod
    def from_json(cls, data: Any) -> HealthBody | None:
        """The body as our gateway sends it, or None when `data` is not one (another server answered)."""
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            return None
        try:
            status = HealthState(data["status"])
        except ValueError:
            return None

        def text(name: str) -> str | None:
            value = data.get(name)
            return str(value) if value is not None else None

        final = status is HealthState.FAILED and data.get("final") is True
        return cls(status, text("model"), text("phase"), text("quality_check"), text("reason"), final)
