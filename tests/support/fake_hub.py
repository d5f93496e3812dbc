"""The Hugging Face hub's API on loopback, serving local model directories as repositories.

What `huggingface_hub` asks for: a repository's metadata (`model_info`, file sizes included), its file
listing, and each file, at a revision. Answered the way the real hub answers (the status codes and the
`X-Error-Code` header huggingface_hub turns into its exceptions):
- an unknown repository, or a private one the token cannot read: 401 without a token, 404 with one
  (`RepoNotFound`): the hub does not say which;
- a gated repository: its metadata for anyone (`"gated": "manual"`), its files only with a token that was
  granted access (otherwise 401/403 `GatedRepo`);
- an unknown revision: 404 `RevisionNotFound`; a token the hub does not know: 401 "Invalid credentials".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import unquote

from support.loopback import LoopbackServer, Reply, Request

REVISION = "0123456789abcdef0123456789abcdef01234567"
Answer = tuple[int, dict[str, str], bytes]


class LoopbackHub:
    """A loopback server that answers every request through `route_request` (by default `route(path)`, query
    ignored) and records each one as "METHOD target" in `requests`. Subclasses say what the hub holds."""

    def __init__(self) -> None:
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    @property
    def requests(self) -> list[str]:
        return [f"{r.method} {r.target}" for r in self.server.requests]

    def _answer(self, request: Request) -> Reply:
        status, headers, body = self.route_request(request)
        return Reply(status, body, headers)

    def route_request(self, request: Request) -> Answer:
        return self.route(unquote(request.path))

    def route(self, path: str) -> Answer:
        raise NotImplementedError

    def __enter__(self) -> LoopbackHub:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def _error(status: int, code: str | None, message: str) -> Answer:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return status, headers, json.dumps({"error": message}).encode()


class FakeHub(LoopbackHub):
    """Serves local model directories as hub repositories, real files included.

    `gated` and `private` name repositories; `tokens` maps each token the hub knows to the repositories it
    may read (private) or was granted (gated); `tags` are extra revision names (besides "main" and REVISION).
    """

    def __init__(
        self,
        repos: Mapping[str, Path],
        *,
        gated: Collection[str] = (),
        private: Collection[str] = (),
        tokens: Mapping[str, Collection[str]] | None = None,
        tags: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.repos = dict(repos)
        self.gated = set(gated)
        self.private = set(private)
        self.tokens = {token: set(granted) for token, granted in (tokens or {}).items()}
        self.revisions = {"main", REVISION, *tags}

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    def _split(self, path: str) -> tuple[str, str] | None:
        """(repository, the rest of the path) for a path about one of our repositories."""
        for repo in self.repos:
            api = f"/api/models/{repo}"
            if path == api or path.startswith(api + "/"):
                return repo, path[len(api) :].lstrip("/")
            if path.startswith(f"/{repo}/"):
                return repo, path[len(repo) + 2 :]
        return None

    def route_request(self, request: Request) -> Answer:
        path = unquote(request.path)
        auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
        token = auth.removeprefix("Bearer ").strip() or None
        if token is not None and token not in self.tokens:
            return _error(401, None, "Invalid credentials in Authorization header")
        granted = self.tokens.get(token or "", set())
        found = self._split(path)
        if found is None or (found[0] in self.private and found[0] not in granted):
            return _error(401 if token is None else 404, "RepoNotFound", "Repository not found")
        repo, rest = found
        if path.startswith("/api/models/"):
            return self._api(repo, rest, token, granted)
        return self._resolve(repo, rest, token, granted)

    def _api(self, repo: str, rest: str, token: str | None, granted: set[str]) -> Answer:
        if rest == "auth-check":
            return self._gate(repo, token, granted) or (200, {"Content-Type": "application/json"}, b"{}")
        kind, _, revision = rest.partition("/")
        if kind == "tree":
            revision = revision.split("/", 1)[0]
        if (kind in ("revision", "tree") and revision not in self.revisions) or kind not in ("", "revision", "tree"):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if kind == "tree":
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
        siblings = [{"rfilename": name, "size": p.stat().st_size} for name, p in self.files(repo).items()]
        info = {
            "id": repo,
            "modelId": repo,
            "sha": REVISION,
            "private": repo in self.private,
            "gated": "manual" if repo in self.gated else False,
            "siblings": siblings,
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()

    def _gate(self, repo: str, token: str | None, granted: set[str]) -> Answer | None:
        if repo not in self.gated or repo in granted:
            return None
        if token is None:
            message = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            return _error(401, "GatedRepo", message)
        return _error(403, "GatedRepo", f"Access to model {repo} is restricted and you are not in the authorized list.")

    def _resolve(self, repo: str, rest: str, token: str | None, granted: set[str]) -> Answer:
        if not rest.startswith("resolve/"):
            return _error(404, "EntryNotFound", "Entry not found")
        revision, _, name = rest[len("resolve/") :].partition("/")
        gate = self._gate(repo, token, granted)
        if gate is not None:
            return gate
        if revision not in self.revisions:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        file = self.files(repo).get(name)
        if file is None:
            return _error(404, "EntryNotFound", f"{name} does not exist")
        data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        return 200, {"X-Repo-Commit": REVISION, "ETag": etag, "Content-Type": "application/octet-stream"}, data
