"""The image's HEALTHCHECK: is the gateway's /health answering 200 (vLLM ready)?

`python3 -m reranker_template.serve.healthcheck` exits 0 when it is, 1 otherwise. The gateway speaks https
with a self-signed certificate when ENABLE_HTTPS is set, so this tries that scheme first without
verifying the certificate (it only talks to 127.0.0.1), then the other scheme. The standard library
only: it runs every 30 s and must stay cheap. Healthy means HTTP 200 (the gateway answers 200 only when
ready); the body, read as `protocol.HealthBody`, only adds the state and its reason to the line printed.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO, Any

from reranker_template.errors import ConfigError
from reranker_template.protocol import HealthBody
from reranker_template.settings import load_settings

MAX_BODY = 64 * 1024  # a /health body is a few hundred bytes; never read more


def probe(url: str, timeout: float) -> tuple[int | None, HealthBody | None]:
    """The HTTP status of GET `url` (None when nothing answered) and the body, when it is the gateway's."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"User-Agent": "reranker-healthcheck"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), _body(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _body(exc)
    except (OSError, ValueError):  # refused, reset, timed out, TLS spoken to plain HTTP, ...
        return None, None


def _body(answer: IO[bytes]) -> HealthBody | None:
    """The gateway's body; None when it is something else or cannot be read (the status decides anyway)."""
    try:
        data: Any = json.loads(answer.read(MAX_BODY))
    except (OSError, ValueError):  # cut off, timed out, not JSON (UnicodeDecodeError is a ValueError too)
        return None
    return HealthBody.from_json(data)


def describe(url: str, status: int | None, body: HealthBody | None) -> str:
    """`URL: 503 loading (downloading)`: the status, then the gateway's state and its reason when it sent one."""
    if status is None:
        return f"{url}: no answer"
    if body is None:
        return f"{url}: {status}"
    detail = f" ({body.detail})" if body.detail else ""
    return f"{url}: {status} {body.status}{detail}"


def health_urls(env: Mapping[str, str]) -> list[str]:
    settings = load_settings(env)
    schemes = ["https", "http"] if settings.enable_https else ["http", "https"]
    return [f"{scheme}://127.0.0.1:{settings.gateway_port}/health" for scheme in schemes]


def check(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    env = os.environ if env is None else env
    seen: list[str] = []
    for url in health_urls(env):
        status, body = probe(url, timeout)
        if status == 200:
            return True, describe(url, status, body)
        seen.append(describe(url, status, body))
    return False, "; ".join(seen)


def main() -> int:
    try:
        healthy, detail = check()
    except ConfigError as exc:
        print(f"unhealthy: {exc}")
        return 1
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
