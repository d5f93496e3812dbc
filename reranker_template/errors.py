"""Every error the package raises on purpose, in one tree, and the one place that maps them to exit codes.

Rule: `str(error)` is the whole message a user sees, one line that names what to change. Two kinds:
- `UserError` (exit 2): the user can fix it by changing a setting, an argument or the model
  (bad settings, an impossible plan, a model that cannot be reached).
- `Failure` (exit 1): something outside the user's input went wrong (Vast's API, the endpoint,
  a provisioning script); trying again or looking at the service is the fix.
The CLI catches `RerankerTemplateError` once (`cli.main`) and never prints a traceback for it.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C (128 + SIGINT)


class RerankerTemplateError(Exception):
    """Base of every deliberate error; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILURE


class UserError(RerankerTemplateError):
    """The user's input cannot work; the message says what would (exit 2)."""

    exit_code = EXIT_USAGE


class Failure(RerankerTemplateError):
    """An operation failed for a reason outside the user's input (exit 1)."""

    exit_code = EXIT_FAILURE


class ConfigError(UserError, ValueError):
    """A setting has a value we cannot use."""

    def __init__(self, variable: str, value: str, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is not valid: expected {accepted}")


class PlanError(UserError, ValueError):
    """The requested layout or settings cannot work on these facts."""


class ModelUnavailable(UserError):
    """The model cannot be served (missing directory, unknown repo, no network)."""


class ProvisioningError(Failure):
    """The provisioning script could not be fetched, was refused, or failed."""


class VastError(Failure):
    """Vast's API refused or failed a call, or an instance did not come up."""


class InstanceFailed(VastError):
    """The instance stopped, or never became ready: the message says where to look."""


class OfferGone(VastError):
    """The offer was rented by someone else between search and create (with --cheapest: try the next)."""


class RerankerError(Failure):
    """The endpoint refused or failed a request (status is None when it could not be reached at all)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        self.message = message
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)


class NotReadyError(RerankerError):
    """The endpoint is up but the model is not serving yet (503), and the retry budget ran out."""


def exit_code_for(error: BaseException) -> int:
    """The process exit status for an error that reached the CLI."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, RerankerTemplateError):
        return error.exit_code
    return EXIT_FAILURE
