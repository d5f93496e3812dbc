"""The vLLM launcher's report of where vLLM is (phase, failure reason, quality check).

Written by the launcher, read by the gateway's /health and by `reranker serve`. One small JSON file,
replaced atomically so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PHASES = ("provisioning", "downloading", "starting", "ready", "failed", "down", "stopped")
QUALITY = ("pending", "passed", "failed", "skipped")


@dataclass(frozen=True)
class VllmStatus:
    phase: str = "starting"
    reason: str | None = None
    quality_check: str = "pending"
    quality_detail: str | None = None
    load_failures: int = 0  # consecutive failed starts; reset when vLLM becomes ready
    updated: float = 0.0

    def with_(self, **changes: object) -> VllmStatus:
        return replace(self, updated=time.time(), **changes)  # type: ignore[arg-type]


def read_status(path: Path) -> VllmStatus | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    known = {k: v for k, v in data.items() if k in VllmStatus.__dataclass_fields__}
    return VllmStatus(**known)


def write_status(path: Path, status: VllmStatus) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)
