"""The Hugging Face hub's download API on loopback, serving a local model directory as a repository.

Only what `huggingface_hub.snapshot_download` asks for: the repository's file listing and each file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from support.loopback import LoopbackServer, Reply, Request

REVISION = "0123456789abcdef0123456789abcdef01234567"


class LoopbackHub:
    """A loopback server that answers every request through `route(path)` (query ignored) and records each
    one as "METHOD target" in `requests`. Subclasses say what the hub holds."""

    def __init__(self) -> None:
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    @property
    def requests(self) -> list[str]:
        return [f"{r.method} {r.target}" for r in self.server.requests]

    def _answer(self, request: Request) -> Reply:
        status, headers, body = self.route(request.path)
        return Reply(status, body, headers)

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def __enter__(self) -> LoopbackHub:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


class FakeHub(LoopbackHub):
    """Serves local model directories as hub repositories, real files included."""

    def __init__(self, repos: dict[str, Path]) -> None:
        super().__init__()
        self.repos = repos

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        for repo in self.repos:
            if path in (
                f"/api/models/{repo}",
                f"/api/models/{repo}/revision/main",
                f"/api/models/{repo}/revision/{REVISION}",
            ):
                siblings = [{"rfilename": name, "size": p.stat().st_size} for name, p in self.files(repo).items()]
                info = {
                    "id": repo,
                    "modelId": repo,
                    "sha": REVISION,
                    "private": False,
                    "gated": False,
                    "siblings": siblings,
                }
                return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
            if path.startswith(f"/api/models/{repo}/tree/"):
                entries = [
                    {
                        "type": "file",
                        "path": name,
                        "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                    }
                    for name, p in self.files(repo).items()
                ]
                return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                file = self.files(repo).get(name)
                if file is not None:
                    data = file.read_bytes()
                    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                    return (
                        200,
                        {"X-Repo-Commit": REVISION, "ETag": etag, "Content-Type": "application/octet-stream"},
                        data,
                    )
        return (
            404,
            {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"},
            b'{"error": "Repository not found"}',
        )
