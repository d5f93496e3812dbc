"""The image's HEALTHCHECK: is the gateway's /health answering 200 (vLLM ready)?

`python3 -m reranker_template.serve.healthcheck` exits 0 when it is, 1 otherwise. The gateway speaks https
with a self-signed certificate when ENABLE_HTTPS is set, so this tries that scheme first without
verifying the certificate (it only talks to 127.0.0.1), then the other scheme. The standard library
only: it runs every 30 s and must stay cheap.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from reranker_template.errors import ConfigError
from reranker_template.settings import load_settings


def probe(url: str, timeout: float) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answered."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"User-Agent": "reranker-healthcheck"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):  # refused, reset, timed out, TLS spoken to plain HTTP, ...
        return None


def health_urls(env: Mapping[str, str]) -> list[str]:
    settings = load_settings(env)
    schemes = ["https", "http"] if settings.enable_https else ["http", "https"]
    return [f"{scheme}://127.0.0.1:{settings.gateway_port}/health" for scheme in schemes]


def check(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    env = os.environ if env is None else env
    seen: list[str] = []
    for url in health_urls(env):
        status = probe(url, timeout)
        if status == 200:
            return True, f"{url}: 200"
        seen.append(f"{url}: {status if status is not None else 'no answer'}")
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
