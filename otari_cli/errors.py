"""The CLI's error tree: every error knows its exit code and renders as one line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in `otari --help` and the README."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTH = 4
    SERVER = 5


class CliError(Exception):
    """Base of every error the CLI reports to the user (never with a traceback)."""

    exit_code: ExitCode = ExitCode.REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """The command line or local configuration is wrong."""

    exit_code = ExitCode.USAGE


class Aborted(CliError):
    """The user declined a confirmation."""

    exit_code = ExitCode.REFUSED


class Unreachable(CliError):
    """The gateway could not be reached, or did not answer in time."""

    exit_code = ExitCode.UNREACHABLE


class NotRunning(Unreachable):
    """The local daemon is not running."""


class ApiError(CliError):
    """The gateway answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Refused(ApiError):
    """The gateway refused the request (4xx)."""

    exit_code = ExitCode.REFUSED


class AuthFailed(ApiError):
    """The credential is missing, unknown, or not the master key (401/403)."""

    exit_code = ExitCode.AUTH


class ServerError(ApiError):
    """The gateway failed (5xx)."""

    exit_code = ExitCode.SERVER


class StartFailed(CliError):
    """The background daemon did not become ready."""

    def __init__(self, message: str, exit_code: ExitCode, log_tail: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


def error_for_status(status: int, message: str) -> ApiError:
    """The error to raise for a non-2xx HTTP status."""
    if status in (401, 403):
        return AuthFailed(status, message)
    if status >= 500:
        return ServerError(status, message)
    return Refused(status, message)
