"""The Hugging Face hub's download API on loopback, serving a local model directory as a repository.

Only what `huggingface_hub.snapshot_download` asks for: the repository's file listing and each file.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


class LoopbackHub:
    """An HTTP server on 127.0.0.1 that answers GET/HEAD through `route(path)` and records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(with_body=False)

            def do_GET(self) -> None:
                self.answer(with_body=True)

            def answer(self, with_body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                status, headers, body = hub.route(self.path.split("?", 1)[0])
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


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
