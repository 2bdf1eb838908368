"""Why an attempt failed, whether the next attempt may help, and what the client is told."""

from __future__ import annotations

from otari_server.errors import BadGateway, GatewayTimeout, OtariError

# Provider statuses worth another provider: credentials, rate limits and outages are
# specific to one provider or key, so the platform's next choice may well succeed.
RETRYABLE_STATUSES = frozenset({401, 403, 408, 429})

# `error_class` values sent in usage reports.
TIMEOUT = "timeout"
CONNECTION = "conn_err"
STREAM_ERROR = "stream_error"
MALFORMED = "malformed_response"
INVALID_REQUEST = "invalid_request"
UNSUPPORTED_PROVIDER = "unsupported_provider"
CLIENT_DISCONNECTED = "client_disconnected"
ADDRESS_REFUSED = "address_refused"


class AttemptFailure(Exception):
    """One attempt failed: the error to answer with, its class, and whether to go on."""

    def __init__(self, error: OtariError, error_class: str, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.error_class = error_class
        self.retryable = retryable

    @property
    def timed_out(self) -> bool:
        """Whether this failure was a timeout (decides 504 over 502 at the end)."""
        return self.error_class == TIMEOUT


def retryable_status(status: int) -> bool:
    """Whether a provider's HTTP status lets the next attempt run."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def http_failure(error: OtariError, status: int) -> AttemptFailure:
    """A provider's non-2xx answer."""
    return AttemptFailure(error, f"http_{status}", retryable_status(status))


def transport_failure(error: OtariError) -> AttemptFailure:
    """A timeout or connection failure (as `upstream.failure` reported it): always retryable."""
    kind = TIMEOUT if isinstance(error, GatewayTimeout) else CONNECTION
    return AttemptFailure(error, kind, retryable=True)


def exhausted(last: AttemptFailure, tried: int) -> OtariError:
    """Every attempt failed with a retryable error: 504 if the last timed out, else 502."""
    prefix = "The provider" if tried == 1 else f"All {tried} provider attempts failed; the last"
    if last.timed_out:
        return GatewayTimeout(f"{prefix} timed out: {last.error.message}")
    # The last provider's retry advice (Retry-After) still tells the client when to retry.
    return BadGateway(f"{prefix} failed: {last.error.message}", headers=last.error.headers)
