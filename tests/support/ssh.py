"""The SSH client side of the tests: a key pair made for the test, and waiting for a tunnel to open."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def keygen(path: Path) -> None:
    """An ed25519 key pair without a passphrase: `path` (private) and `path.pub`."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-client", "-f", str(path)], check=True, timeout=30
    )


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until something listens on 127.0.0.1:`port` (an `ssh -L` tunnel), failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "ssh exited: " + (process.stderr.read().decode() if process.stderr else "")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)
