"""Vast's API: the SDK methods we use (`VastApi`), the client, and its errors as one clear line each.

The `vastai` package's `VastAI` speaks Vast's HTTP API and raises `requests.HTTPError` on an error
answer (its CLI prints such errors and exits 0; our commands must not). `vast_call` turns every SDK
exception into `VastError` for the duration of one call, with what happened and what to do about it.

`requests` and `vastai` are imported only when a call is made: `reranker --help` and the container's
programs import this module without paying for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from reranker_template.errors import OfferGone, VastError

if TYPE_CHECKING:
    import requests

DEFAULT_VAST_URL = "https://console.vast.ai"
KEYS_URL = "https://cloud.vast.ai/manage-keys/"
BILLING_URL = "https://cloud.vast.ai/billing/"


class TemplateFields(TypedDict):
    """The template as `create_template`/`update_template` take it (keyword names are the SDK's)."""

    name: str
    image: str
    image_tag: str
    env: str
    onstart_cmd: str | None
    runtype: str
    use_ssh: bool
    readme: str
    readme_visible: bool
    desc: str | None
    extra_filters: dict[str, Any]
    disk_space: float
    private: bool


class VastApi(Protocol):
    """The part of `vastai.VastAI` this package uses, and nothing more.

    Rows and replies are Vast's JSON objects. An error answer raises `requests.HTTPError`; a network
    failure `requests.ConnectionError` or `requests.Timeout` (wrap each call in `vast_call`). The tests
    run the real SDK against tests/support/fake_vast.py, which serves these calls' endpoints.
    """

    def search_offers(
        self, *, query: Mapping[str, Any], order: str, limit: int, storage: float, no_default: bool
    ) -> list[dict[str, Any]]: ...

    def create_instance(
        self,
        id: int,
        /,
        *,
        image: str,
        disk: float,
        env: Mapping[str, str],
        label: str | None,
        runtype: str,
        cancel_unavail: bool,
    ) -> dict[str, Any]: ...

    def show_instance(self, id: int, /) -> dict[str, Any] | None: ...

    def show_instances(self) -> list[dict[str, Any]]: ...

    def destroy_instance(self, id: int, /) -> dict[str, Any]: ...

    def show_user(self) -> dict[str, Any]: ...

    def search_templates(self, query: Mapping[str, Any], /) -> list[dict[str, Any]]: ...

    def create_template(self, **fields: Unpack[TemplateFields]) -> dict[str, Any]: ...

    def update_template(self, *, hash_id: str, **fields: Unpack[TemplateFields]) -> dict[str, Any]: ...

    # Vast Serverless (vast/serverless.py). The listings return {"error": msg} on an unsuccessful answer.
    def show_endpoints(self) -> list[dict[str, Any]] | dict[str, Any]: ...

    def create_endpoint(self, **fields: Any) -> dict[str, Any]: ...

    def update_endpoint(self, id: int, /, **fields: Any) -> dict[str, Any]: ...

    def delete_endpoint(self, id: int, /) -> dict[str, Any]: ...

    def show_workergroups(self) -> list[dict[str, Any]] | dict[str, Any]: ...

    def create_workergroup(self, **fields: Any) -> dict[str, Any]: ...

    def update_workergroup(self, id: int, /, **fields: Any) -> dict[str, Any]: ...

    def delete_workergroup(self, id: int, /) -> dict[str, Any]: ...

    def get_endpoint_workers(self, id: int, /) -> Any: ...

    def get_endpt_logs(self, id: int, /, level: int = 1, tail: int | None = None) -> dict[str, Any]: ...


def vast_url(env: Mapping[str, str]) -> str:
    """The API base URL: VAST_URL (as the vastai package reads it), without a trailing slash."""
    return (env.get("VAST_URL") or DEFAULT_VAST_URL).strip().rstrip("/")


def config_home(env: Mapping[str, str]) -> Path:
    """XDG_CONFIG_HOME, else ~/.config: where the vastai CLI keeps its key and we keep our records."""
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    if xdg:
        return Path(xdg)
    return Path(env.get("HOME") or Path.home()) / ".config"


def find_api_key(env: Mapping[str, str]) -> str:
    """VAST_API_KEY, then the vastai CLI's key file (what `vastai set api-key` writes)."""
    key = env.get("VAST_API_KEY", "").strip()
    if key:
        return key
    home = Path(env.get("HOME") or Path.home())
    for path in (config_home(env) / "vastai" / "vast_api_key", home / ".vast_api_key"):
        try:
            key = path.read_text().strip()
        except OSError:
            continue
        if key:
            return key
    raise VastError(f"no Vast API key: set VAST_API_KEY to a key from {KEYS_URL} (or run `vastai set api-key KEY`)")


def make_client(env: Mapping[str, str], retry: int = 3) -> VastApi:
    """A `vastai.VastAI` for VAST_URL and the user's key; `retry` is the SDK's retry count for 429/5xx."""
    key = find_api_key(env)
    try:
        from vastai import VastAI
    except ImportError:
        raise VastError("the vastai package is not installed: pip install 'reranker-template[vast]'") from None
    client: VastApi = VastAI(api_key=key, server_url=vast_url(env), retry=retry)
    return client


def _error_fields(response: requests.Response | None) -> tuple[str, str]:
    """(error code, message) from a Vast error body like {"error": "auth_error", "msg": "..."}."""
    if response is None:
        return "", ""
    try:
        body = response.json()
    except ValueError:
        return "", (response.text or "").strip()[:200]
    if not isinstance(body, dict):
        return "", str(body)[:200]
    code = str(body.get("error") or "")
    message = str(body.get("msg") or body.get("message") or body.get("detail") or code)
    return code, message


def explain_http_error(exc: requests.HTTPError, action: str, offer_id: int | None = None) -> VastError:
    """One line for an API error: what happened and what to do about it."""
    response = exc.response
    status = response.status_code if response is not None else 0
    code, message = _error_fields(response)
    said = f" ({message})" if message else ""
    text = f"{code} {message}".lower()
    if status in (401, 403):
        return VastError(f"Vast rejected the API key{said}: set VAST_API_KEY to a valid key from {KEYS_URL}")
    if status == 429:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        when = f"in {retry_after} s" if retry_after else "in a minute"
        return VastError(f"Vast is rate limiting this API key{said}: try again {when}")
    if status == 402 or "credit" in text or "balance" in text:
        return VastError(f"not enough credit on your Vast account{said}: add credit at {BILLING_URL}")
    if offer_id is not None and (
        status == 404 or "no_such_ask" in text or "not available" in text or "unavailable" in text
    ):
        return OfferGone(
            f"offer {offer_id} is no longer available{said}: someone else rented it; "
            "pick another with `reranker vast search`, or use --cheapest"
        )
    return VastError(f"Vast API error {status} while {action}{said}")


@contextmanager
def vast_call(
    action: str,
    offer_id: int | None = None,
    *,
    by_status: Mapping[int, VastError] | None = None,
    on_timeout: VastError | None = None,
) -> Iterator[None]:
    """Translate the SDK's exceptions into VastError for the duration of one API call.

    `action` completes "while ..."; `offer_id` lets a 404 mean "the offer is gone"; `by_status` replaces
    the general explanation for some HTTP statuses, `on_timeout` the one for a request that timed out.
    """
    import requests  # not at the top: see the module docstring

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        special = (by_status or {}).get(status)
        raise (special or explain_http_error(exc, action, offer_id)) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _network_error(exc, action, on_timeout) from None


def _network_error(exc: requests.RequestException, action: str, on_timeout: VastError | None) -> VastError:
    """No HTTP answer. A connect timeout is both kinds: "cannot reach", unless the caller has its own timeout line."""
    import requests  # loaded already: vast_call imported it

    if on_timeout is not None and isinstance(exc, requests.Timeout):
        return on_timeout
    if isinstance(exc, requests.ConnectionError):
        return VastError(
            f"cannot reach the Vast API while {action} ({type(exc).__name__}): check your network or VAST_URL"
        )
    return VastError(f"the Vast API did not answer in time while {action}: try again")
