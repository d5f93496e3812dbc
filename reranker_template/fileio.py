"""Small file helpers every process shares: private atomic writes, tolerant JSON reads, and the pieces for
directories the stack builds itself (a lock, a build renamed into place, a file's checksum).

Rules: state files are written whole or not at all (a temporary file in the same directory, then
`os.replace`), so a reader in another process never sees half of one; they are private (0600) because
several hold tokens or keys. A reader that finds a file missing, unreadable or not a JSON object gets
None and decides itself what that means (usually: "not written yet").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` in one step, creating the parent directory (0700) if needed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """`atomic_write` of `data` as JSON (indented: these files are read by people too)."""
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): one process at a time builds what it guards."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace_directory(target: Path, build: Callable[[Path], None]) -> None:
    """Run `build` on an empty temporary sibling of `target`, then rename it into place (an old `target` is
    removed first). A build that fails or is interrupted leaves no directory at `target`, so a reader never
    uses half of one."""
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
    try:
        build(work)
        work.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
