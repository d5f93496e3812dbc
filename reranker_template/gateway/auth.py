"""Tokens: where they come from, how a request presents one, and how they stay out of logs.

A request may carry the token as `Authorization: Bearer`, as the password of HTTP basic auth, as
`?token=` or in our cookie (set after a browser opened `?token=`). Comparison hashes both sides first and
compares digests with `hmac.compare_digest`, so neither content nor length leaks through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from reranker_template.fileio import atomic_write

COOKIE_MAX_AGE = 7 * 24 * 3600  # seconds; what Vast's own proxy uses
TOKEN_PARAM = "token"
_REDACT = re.compile(r"(?i)((?:^|[?&;])(?:token|access_token|api_key)=)[^&;#\s]*")
# Credentials as they appear in raw request bytes: an Authorization value, our cookie.
_REDACT_RAW = re.compile(r"(?i)(\b(?:bearer|basic)\s+|\breranker_auth_[a-z0-9]*=)[^\s;'\"]+")


class Source(StrEnum):
    """How a request presented its token."""

    BEARER = "bearer"
    BASIC = "basic"
    QUERY = "query"
    COOKIE = "cookie"


AMBIENT_SOURCES = frozenset({Source.COOKIE, Source.BASIC})  # a browser attaches these itself: cross-site checks apply


@dataclass(frozen=True)
class Credential:
    """A presented token that matched, and how it was presented."""

    token: str
    source: Source


@dataclass(frozen=True)
class CookieAttributes:
    """Our auth cookie: HttpOnly, SameSite=Lax, for the whole site; Secure when the gateway serves HTTPS."""

    secure: bool
    max_age: int = COOKIE_MAX_AGE
    path: str = "/"
    httponly: bool = True
    samesite: str = "Lax"


class TokenChecker:
    """Constant-time membership test against the configured tokens."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(t) for t in tokens if t)

    def matches(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        presented = _digest(candidate)
        found = False
        for digest in self._digests:  # no early exit: every token is compared every time
            found |= hmac.compare_digest(presented, digest)
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def header_token(authorization: str | None) -> tuple[str, Source] | None:
    """(token, "bearer"|"basic") from an Authorization header; None when absent or unreadable."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value, Source.BEARER
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, sep, password = decoded.partition(":")
        # The token is the password; a client that can only fill one field may put it in the user name.
        token = password if sep and password else user
        return (token, Source.BASIC) if token else None
    return None


def authenticate(
    checker: TokenChecker,
    authorization: str | None,
    query_token: str | None,
    cookie_token: str | None,
) -> Credential | None:
    """The first presented token that is valid, in the order header, query, cookie."""
    candidates: list[tuple[str, Source]] = []
    from_header = header_token(authorization)
    if from_header:
        candidates.append(from_header)
    if query_token:
        candidates.append((query_token, Source.QUERY))
    if cookie_token:
        candidates.append((cookie_token, Source.COOKIE))
    for token, source in candidates:
        if checker.matches(token):
            return Credential(token, source)
    return None


def cookie_name(env: Mapping[str, str], gateway_port: int) -> str:
    """Per-instance cookie name: browsers share cookies across ports of one host (Vast hosts many)."""
    instance = re.sub(r"[^A-Za-z0-9]", "", env.get("CONTAINER_ID", "")) or str(gateway_port)
    return f"reranker_auth_{instance}"


def cookie_header_without(cookie_header: str, name: str) -> str | None:
    """The Cookie header with our cookie removed (None if nothing is left), other cookies unchanged."""
    kept = [part for part in cookie_header.split(";") if part.strip() and part.strip().split("=", 1)[0] != name]
    return ";".join(kept).strip() or None


def strip_token_param(raw_query: str) -> str:
    """The raw query string without `token=` parameters, other parameters byte for byte unchanged."""
    kept = [part for part in raw_query.split("&") if part and part.split("=", 1)[0] != TOKEN_PARAM]
    return "&".join(kept)


def redact(text: str) -> str:
    """`token=...` (and `access_token=`, `api_key=`) values replaced, for anything that may be logged."""
    return _REDACT.sub(r"\1REDACTED", text)


def redact_log(text: str) -> str:
    """`redact`, and Authorization values and our cookie too: for log lines that may quote raw request
    bytes (aiohttp logs the request line or header it could not parse)."""
    return _REDACT_RAW.sub(r"\1REDACTED", redact(text))


def is_cross_site(sec_fetch_site: str | None, origin: str | None, own_origin: str) -> bool:
    """True when a browser says the request was started by another site (CSRF guard for cookie auth)."""
    if sec_fetch_site and sec_fetch_site.lower() in ("cross-site", "same-site"):
        return True
    return origin is not None and origin.rstrip("/").lower() != own_origin.lower()


def load_or_create_token(token_file: Path) -> str:
    """The generated token in `token_file`, created (mode 0600, 256 random bits) on first use."""
    try:
        existing = token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    token = secrets.token_urlsafe(32)
    if token_file.exists():  # present but empty: replace it
        atomic_write(token_file, token + "\n")
        return token
    # Written whole under a private name, then linked into place: the link fails if another process
    # created the file first, and then its token is the one.
    staged = token_file.with_name(f".{token_file.name}.{os.getpid()}.new")
    atomic_write(staged, token + "\n")
    try:
        os.link(staged, token_file)
    except FileExistsError:
        return token_file.read_text(encoding="utf-8").strip()
    finally:
        staged.unlink(missing_ok=True)
    return token


def read_token_file(token_file: Path) -> str | None:
    try:
        return token_file.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, PermissionError):
        return None


def local_tokens(configured: tuple[str, ...], token_file: Path, *, create: bool = False) -> tuple[str, ...]:
    """The tokens the stack on this machine accepts, the one to show first: the configured ones
    (OPEN_BUTTON_TOKEN, API_KEYS, WEB_PASSWORD, VLLM_API_KEY), else the one generated into the state
    directory. The gateway creates that one at its first start (`create`); `reranker token` and the client
    commands only read it, so before that first start there is none (an empty tuple)."""
    if configured:
        return configured
    token = load_or_create_token(token_file) if create else read_token_file(token_file)
    return (token,) if token else ()
