"""What `reranker vast launch` remembers: ~/.config/reranker/instances.json (0600, it holds API keys).

Rules: written whole or not at all (`fileio.atomic_write`), private from the first byte. A file that
exists but cannot be read is an error, never "no records": saving over it would lose the keys in it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reranker_template.errors import VastError
from reranker_template.fileio import read_json_object, write_json
from reranker_template.vast.api import config_home

if TYPE_CHECKING:
    from reranker_template.vast.instances import LaunchSpec
    from reranker_template.vast.offers import Offer


@dataclass(frozen=True)
class Record:
    id: int
    offer_id: int
    model: str
    api_key: str = field(repr=False)
    label: str | None = None
    url: str | None = None
    gpu: str = ""
    dph_total: float = 0.0
    ssh_tunnel: str | None = None
    created_at: float = 0.0
    ssh_key: str | None = None  # the public key file sent as SSH_PUBLIC_KEY; None: the instance has no sshd

    @classmethod
    def launched(cls, instance_id: int, offer: Offer, spec: LaunchSpec, ssh_key: str | None) -> Record:
        """A new instance, before it answers (no URL, no tunnel yet)."""
        return cls(
            id=instance_id,
            offer_id=offer.id,
            model=spec.model,
            api_key=spec.api_key,
            label=spec.label,
            gpu=f"{offer.num_gpus}x {offer.gpu_name}",
            dph_total=offer.dph_total,
            created_at=time.time(),
            ssh_key=ssh_key,
        )

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Record:
        """A saved row; fields this version does not know are ignored (TypeError if one it needs is missing)."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in row.items() if name in known})


def records_path(env: Mapping[str, str]) -> Path:
    return config_home(env) / "reranker" / "instances.json"


def load_records(path: Path) -> dict[int, Record]:
    """The records by instance id; none if the file does not exist yet."""
    data = read_json_object(path)
    if data is None and not path.exists():
        return {}
    broken = VastError(f"cannot read {path} (unreadable, or not the JSON this command writes): fix or remove the file")
    if data is None:
        raise broken
    try:
        return {int(key): Record.from_json(row) for key, row in data.get("instances", {}).items()}
    except (AttributeError, TypeError, ValueError):
        raise broken from None


def save_records(path: Path, records: Mapping[int, Record]) -> None:
    """Replace the file atomically: created 0600 (in a 0700 directory), never readable by others."""
    write_json(path, {"instances": {str(k): asdict(r) for k, r in sorted(records.items())}})


def put_record(path: Path, record: Record) -> None:
    records = load_records(path)
    records[record.id] = record
    save_records(path, records)


def drop_record(path: Path, instance_id: int) -> bool:
    """Forget the instance; False if it was not recorded."""
    records = load_records(path)
    if instance_id not in records:
        return False
    del records[instance_id]
    save_records(path, records)
    return True
