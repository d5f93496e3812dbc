"""Requests to a Vast Serverless endpoint, by name, through Vast's router (the vastai SDK's client).

A call asks Vast's router (`POST <autoscaler>/route/`) for a worker, with the request's cost in our
workload units (`workload.request_workload`, the measure our worker reports capacity in), then POSTs
`{"auth_data": <the router's signed answer>, "payload": <the body>}` to that worker. The SDK polls while
no worker is ready (the queued request is what makes the autoscaler start one), and on 429, 5xx or a
worker that vanished it asks the router again, until `timeout`.

The SDK is asyncio; `RerankerClient` is synchronous and shared between threads (`reranker bench`), so
one event loop runs on a daemon thread and every call is submitted to it.

Base URLs: VAST_URL (the console: the endpoint's key, Vast's root certificate) and VAST_AUTOSCALER_URL
(the router; default https://run.vast.ai), for tests and for Vast's alpha/candidate services.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from reranker_template.client.http import body_message
from reranker_template.errors import NotReadyError, RerankerError, UserError, VastError
from reranker_template.workload import request_workload

DEFAULT_AUTOSCALER_URL = "https://run.vast.ai"
ROOT_CERT_PATH = "/static/jvastai_root.cer"  # Vast's CA for worker certificates, on the console
T = TypeVar("T")


def autoscaler_url(env: Mapping[str, str]) -> str:
    """VAST_AUTOSCALER_URL, else Vast's production router."""
    return (env.get("VAST_AUTOSCALER_URL") or DEFAULT_AUTOSCALER_URL).strip().rstrip("/")


class ServerlessRoute:
    """Calls to one serverless endpoint. Thread-safe; `close()` stops its event loop."""

    def __init__(self, endpoint: str, api_key: str, console_url: str, router_url: str, timeout: float) -> None:
        self.endpoint_name = endpoint
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vast-serverless", daemon=True)
        self.thread.start()
        self.client: Any = None
        self.endpoint: Any = None
        try:
            self._call(self._open(api_key, console_url, router_url))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"serverless endpoint {self.endpoint_name!r}"

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self, api_key: str, console_url: str, router_url: str) -> None:
        try:
            from vastai import CoroutineServerless
        except ImportError:
            raise UserError("the vastai package is not installed: pip install 'reranker-template[vast]'") from None
        client = CoroutineServerless(api_key=api_key, autoscaler_url=router_url, webserver_url=console_url)
        client.SSL_CERT_URL = console_url + ROOT_CERT_PATH  # the SDK's is fixed to console.vast.ai
        self.client = client
        try:
            endpoints = await client.get_endpoints()
        except Exception as exc:
            raise VastError(f"cannot list your serverless endpoints at {console_url}: {str(exc)[:300]}") from None
        found = [e for e in endpoints if e.name == self.endpoint_name]
        if not found:
            names = ", ".join(sorted(e.name for e in endpoints)) or "none"
            raise UserError(
                f"no serverless endpoint named {self.endpoint_name!r} in this Vast account (there are: {names}); "
                f"create it with `reranker vast serverless up --endpoint {self.endpoint_name} --model MODEL`"
            )
        self.endpoint = found[0]

    async def _request(self, path: str, body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.endpoint.request(
            path, body, cost=request_workload(body), retry=True, timeout=self.timeout
        )
        return result

    def request_json(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """One rerank/score call through the router. Raises RerankerError with the worker's status and
        message when the answer is an error, NotReadyError when no worker answered within `timeout`."""
        if method != "POST":
            raise UserError(
                f"{method} {path}: a serverless endpoint serves only POST /v1/rerank, /v2/rerank, /rerank, "
                "/v1/score and /score (use `reranker vast serverless status` for its workers)"
            )
        try:
            result = self._call(self._request(path, body), self.timeout + 30)
        except TimeoutError:
            raise NotReadyError(
                f"no worker of {self.url} answered within {self.timeout:g} s "
                "(workers may still be starting: see `reranker vast serverless status`)",
                503,
            ) from None
        except Exception as exc:  # the SDK raises plain Exceptions for routing failures
            raise RerankerError(f"{self.url}: {str(exc)[:300]}") from None
        response = result.get("response")
        status = int(result.get("status") or 0)
        if not result.get("ok"):
            message = body_message(response) or str(result.get("text") or "")[:300] or "no message"
            raise RerankerError(message, status or None, response)
        if not isinstance(response, dict):
            raise RerankerError(f"{self.url}: unexpected answer {str(response)[:200]}", status, response)
        return response

    def workers(self) -> list[dict[str, Any]]:
        """The endpoint's workers as Vast's autoscaler reports them (status, load, measured capacity)."""
        workers = self._call(self.client.get_endpoint_workers(self.endpoint), 60)
        return [dataclasses.asdict(worker) for worker in workers]

    def close(self) -> None:
        if self.client is not None and self.loop.is_running():
            self._call(self.client.close(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
