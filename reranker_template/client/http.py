"""A small Python client for the endpoint (gateway or vLLM itself): rerank, score, models, health.

Why our own client when Cohere's works too: it waits through a loading model (503 + Retry-After)
and through a restart (connection refused), returns typed results, and raises one exception type
that carries the server's own message and HTTP status.

    client = RerankerClient("http://1.2.3.4:8000", token)
    client.wait_until_ready(timeout=600)
    for hit in client.rerank("what is deep learning?", docs, top_n=3).results:
        print(hit.relevance_score, hit.document)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from reranker_template.errors import NotReadyError, RerankerError
from reranker_template.protocol import HealthBody, HealthState

if TYPE_CHECKING:
    from reranker_template.client.serverless import ServerlessRoute

DEFAULT_TIMEOUT = 120.0  # seconds per request (a large rerank on a busy GPU can take a while)
CONNECT_TIMEOUT = 10.0
DEFAULT_RETRY_FOR = 60.0  # seconds a call keeps retrying connection errors and 503s before giving up
MAX_BACKOFF = 10.0


@dataclass(frozen=True)
class RerankHit:
    index: int  # position of the document in the request
    relevance_score: float
    document: str | None  # None when return_documents=False


@dataclass(frozen=True)
class RerankResult:
    model: str
    results: list[RerankHit]  # best first, as the server sorted them
    total_tokens: int | None = None
    id: str | None = None


@dataclass(frozen=True)
class ScoreResult:
    model: str
    scores: list[float]  # aligned with the request's documents (not sorted)
    total_tokens: int | None = None
    id: str | None = None


@dataclass(frozen=True)
class ModelCard:
    id: str
    max_model_len: int | None = None
    owned_by: str | None = None


@dataclass(frozen=True)
class Health:
    """One answer of GET /health, read through `protocol.HealthBody` (the gateway's body). vLLM itself
    sends no such body: then the state is READY on HTTP 200 and DOWN otherwise."""

    http_status: int
    report: HealthBody
    retry_after: float | None = None  # seconds, from Retry-After
    body: dict[str, Any] = field(default_factory=dict)  # the JSON object as sent (empty when it was none)

    @classmethod
    def from_answer(cls, http_status: int, body: Any, retry_after: float | None = None) -> Health:
        report = HealthBody.from_json(body)
        if report is None:
            report = HealthBody(HealthState.READY if http_status == 200 else HealthState.DOWN)
        return cls(http_status, report, retry_after, body if isinstance(body, dict) else {})

    @property
    def status(self) -> HealthState:
        return self.report.status

    @property
    def ready(self) -> bool:
        return self.http_status == 200

    @property
    def reason(self) -> str | None:
        return self.report.detail


def retry_after_seconds(value: str | None, default: float) -> float:
    """Retry-After as seconds (we only send the delta-seconds form; an HTTP date falls back to default)."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default


def body_message(body: Any) -> str | None:
    """The server's own words in a JSON error body, or None: vLLM and the gateway send
    {"error": {"message": ...}}, others {"error": "..."}, {"message": ...} or FastAPI's {"detail": ...}."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return None


def error_message(response: requests.Response) -> tuple[str, Any]:
    """The server's own words (`body_message`), else the start of its body; and the body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:500] or response.reason or "no message"), text
    message = body_message(body)
    return (message if message is not None else str(body)[:500]), body


class RerankerClient:
    """One requests.Session (kept-alive connections) for every call; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        pool_size: int = 10,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model  # None: let the server use the model it serves
        self.timeout = timeout
        self.retry_for = retry_for
        self._sleep = sleep
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Passed with every request, not set on the session: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
        # override a session's verify=False, and our own stack's self-signed certificate would then be refused.
        self.verify = verify
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.route: ServerlessRoute | None = None  # set by for_serverless

    @classmethod
    def for_serverless(
        cls, endpoint: str, env: Mapping[str, str], *, model: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> RerankerClient:
        """A client for a Vast Serverless endpoint by name: each call goes through Vast's router to one of
        its workers (client/serverless.py). The Vast API key comes from VAST_API_KEY or the vastai CLI's
        key file; `timeout` covers waiting for a worker too."""
        from reranker_template.client.serverless import ServerlessRoute, autoscaler_url
        from reranker_template.vast.api import find_api_key, vast_url

        client = cls(f"serverless:{endpoint}", model=model, timeout=timeout)
        client.route = ServerlessRoute(endpoint, find_api_key(env), vast_url(env), autoscaler_url(env), timeout)
        return client

    def __enter__(self) -> RerankerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()
        if self.route is not None:
            self.route.close()

    # --- the API ---------------------------------------------------------------------------------
    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = True,
        instruction: str | None = None,
    ) -> RerankResult:
        """Documents ranked best first (POST /v1/rerank). `instruction` is for instruction-aware rerankers (Qwen3)."""
        body: dict[str, Any] = {"query": query, "documents": list(documents)}
        if self.model:
            body["model"] = self.model
        if top_n is not None:
            body["top_n"] = top_n
        if instruction is not None:
            body["instruction"] = instruction
        data = self.request_json("POST", "/v1/rerank", body)
        hits = [
            RerankHit(
                index=int(item["index"]),
                relevance_score=float(item["relevance_score"]),
                document=_document_text(item.get("document")) if return_documents else None,
            )
            for item in data.get("results", [])
        ]
        return RerankResult(
            model=data.get("model", ""), results=hits, total_tokens=_total_tokens(data), id=data.get("id")
        )

    def score(self, text_1: str | Sequence[str], text_2: str | Sequence[str]) -> ScoreResult:
        """Raw scores in input order (POST /v1/score): one text against many, or two lists pairwise."""
        body: dict[str, Any] = {
            "text_1": text_1 if isinstance(text_1, str) else list(text_1),
            "text_2": text_2 if isinstance(text_2, str) else list(text_2),
        }
        if self.model:
            body["model"] = self.model
        data = self.request_json("POST", "/v1/score", body)
        items = sorted(data.get("data", []), key=lambda item: int(item["index"]))
        return ScoreResult(
            model=data.get("model", ""),
            scores=[float(item["score"]) for item in items],
            total_tokens=_total_tokens(data),
            id=data.get("id"),
        )

    def models(self) -> list[ModelCard]:
        data = self.request_json("GET", "/v1/models", None)
        return [
            ModelCard(id=m["id"], max_model_len=m.get("max_model_len"), owned_by=m.get("owned_by"))
            for m in data.get("data", [])
        ]

    def served_model(self) -> str:
        """The name to send as "model" (the first model the server lists)."""
        cards = self.models()
        if not cards:
            raise RerankerError(f"{self.base_url}/v1/models lists no model")
        return cards[0].id

    def health(self) -> Health:
        """GET /health once, no retries. Raises RerankerError(status=None) when nothing answers."""
        try:
            response = self.session.get(self.base_url + "/health", timeout=(CONNECT_TIMEOUT, 10.0), verify=self.verify)
        except requests.ConnectionError as exc:
            raise RerankerError(f"cannot reach {self.base_url}: {_short(exc)}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        retry = (
            retry_after_seconds(response.headers.get("Retry-After"), 0.0) if "Retry-After" in response.headers else None
        )
        return Health.from_answer(response.status_code, body, retry)

    def wait_until_ready(self, timeout: float = 600.0, poll: float = 2.0) -> Health:
        """Poll /health until 200. Raises NotReadyError (with the last reason) after `timeout` seconds,
        at once when the server says the model failed to load."""
        deadline = time.monotonic() + timeout
        last: str = "no answer yet"
        while True:
            try:
                health = self.health()
            except RerankerError as exc:
                last = exc.message
            else:
                if health.ready:
                    return health
                if health.status is HealthState.FAILED:
                    raise NotReadyError(f"the model failed to load: {health.reason}", health.http_status, health.body)
                last = f"{health.status} ({health.reason})" if health.reason else health.status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotReadyError(f"{self.base_url} not ready after {timeout:.0f} s: {last}", 503)
            self._sleep(min(poll, remaining))

    # --- transport -------------------------------------------------------------------------------
    def request_json(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """One call with retries on connection errors and on 503 (honouring Retry-After) for `retry_for` s.

        Rerank and score change nothing on the server, so re-sending them is safe. A read timeout is
        not retried: the server may still be working on the request.
        """
        if self.route is not None:
            return self.route.request_json(method, path, body)
        url = self.base_url + path
        deadline = time.monotonic() + self.retry_for
        backoff = 0.5
        while True:
            try:
                response = self.session.request(
                    method, url, json=body, timeout=(CONNECT_TIMEOUT, self.timeout), verify=self.verify
                )
            except requests.exceptions.SSLError as exc:
                # Waiting does not make a certificate trusted: say so at once instead of retrying.
                raise RerankerError(
                    f"cannot reach {self.base_url}: its TLS certificate is not trusted ({_short(exc)}); "
                    "pass the CA with REQUESTS_CA_BUNDLE, or use http:// if the server has no TLS"
                ) from exc
            except requests.ConnectionError as exc:
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                if time.monotonic() + wait > deadline:
                    raise RerankerError(f"cannot reach {self.base_url}: {_short(exc)}") from exc
                self._sleep(wait)
                continue
            except requests.Timeout as exc:
                raise RerankerError(f"{method} {path}: no answer within {self.timeout:g} s") from exc
            if response.status_code == 503:
                wait = retry_after_seconds(response.headers.get("Retry-After"), backoff)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    message, payload = error_message(response)
                    raise NotReadyError(message, 503, payload)
                self._sleep(min(max(wait, 0.1), remaining))
                continue
            if response.status_code >= 400:
                message, payload = error_message(response)
                raise RerankerError(message, response.status_code, payload)
            try:
                data = response.json()
            except ValueError as exc:
                raise RerankerError(
                    f"{method} {path}: the answer is not JSON: {response.text[:200]!r}", response.status_code
                ) from exc
            if not isinstance(data, dict):
                raise RerankerError(f"{method} {path}: unexpected answer {str(data)[:200]}", response.status_code, data)
            return data


def _document_text(document: Any) -> str | None:
    if isinstance(document, dict):
        return document.get("text")
    return document if isinstance(document, str) else None


def _total_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    return usage.get("total_tokens") if isinstance(usage, dict) else None


def _short(exc: BaseException) -> str:
    """requests' connection errors nest urllib3's; the innermost reason is the readable part."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if marker in text:
            return marker.lower()
    return text[:200]
