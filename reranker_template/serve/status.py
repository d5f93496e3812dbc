"""The launcher's status file: where vLLM is (phase, failure reason, quality check).

Written only by the vLLM launcher (and once by the stack before any program starts), read by the
gateway's /health and the landing page. One small JSON file, replaced atomically so a reader never
sees half of it; `read_status` and `write_status` are its only reader and writer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from reranker_template.fileio import read_json_object, write_json


class Phase(StrEnum):
    """Where the vLLM program is in its life."""

    PROVISIONING = "provisioning"  # waiting for PROVISIONING_SCRIPT
    DOWNLOADING = "downloading"  # fetching the model
    QUANTIZING = "quantizing"  # writing the int8 copy the plan serves (CPU_QUANTIZATION=int8)
    STARTING = "starting"  # vLLM started, not answering /health yet
    READY = "ready"
    FAILED = "failed"  # gave up: supervisord leaves it FATAL; `reason` says why
    DOWN = "down"  # exited or stopped answering; supervisord restarts it
    STOPPED = "stopped"  # stopped on purpose (shutdown)

    @property
    def loading(self) -> bool:
        return self in (Phase.PROVISIONING, Phase.DOWNLOADING, Phase.QUANTIZING, Phase.STARTING)


# Starts of vLLM that may fail before the launcher stops trying (a failure a retry cannot fix counts as all).
MAX_LOAD_FAILURES = 2


class QualityState(StrEnum):
    """The known-answer check's result (serve/quality.py)."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class VllmStatus:
    phase: Phase = Phase.STARTING
    reason: str | None = None
    quality_check: QualityState = QualityState.PENDING
    quality_detail: str | None = None
    load_failures: int = 0  # consecutive failed starts; reset when vLLM becomes ready
    updated: float = 0.0

    @property
    def gave_up(self) -> bool:
        """The launcher will not start vLLM again: only a change (of settings, model, machine) helps."""
        return self.phase is Phase.FAILED and self.load_failures >= MAX_LOAD_FAILURES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VllmStatus:
        """Raises ValueError on a phase or quality state this version does not know."""
        reason, detail = data.get("reason"), data.get("quality_detail")
        return cls(
            phase=Phase(data.get("phase", Phase.STARTING)),
            reason=str(reason) if reason is not None else None,
            quality_check=QualityState(data.get("quality_check", QualityState.PENDING)),
            quality_detail=str(detail) if detail is not None else None,
            load_failures=int(data.get("load_failures", 0)),
            updated=float(data.get("updated", 0.0)),
        )

    def moved_to(self, phase: Phase, reason: str | None = None, **changes: Any) -> VllmStatus:
        """This status in `phase` (with `reason`), stamped now; `changes` are other fields by name."""
        return replace(self, phase=phase, reason=reason, updated=time.time(), **changes)

    def with_quality(self, state: QualityState, detail: str | None) -> VllmStatus:
        return replace(self, quality_check=state, quality_detail=detail, updated=time.time())


def read_status(path: Path) -> VllmStatus | None:
    """The status in `path`, or None when it is missing, partly written or from an unknown version."""
    data = read_json_object(path)
    if data is None:
        return None
    try:
        return VllmStatus.from_json(data)
    except (TypeError, ValueError):
        return None


def write_status(path: Path, status: VllmStatus) -> None:
    write_json(path, status.to_json())
