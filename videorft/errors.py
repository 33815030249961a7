"""Errors a user can act on: each names the file (and record or line) and the problem."""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """An exception's message on one line (YAML errors span several, with caret drawings)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("^"))


#: Exit status of a stage whose failure another attempt may fix (sysexits' EX_TEMPFAIL):
#: the orchestrator retries those, and only those.
EXIT_TRANSIENT = 75


_NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError",
                   "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a dropped or refused connection or a timeout (a retry may help),
    across the HTTP clients our dependencies use (httpx, requests, botocore, aiohttp)."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in (
        _NETWORK_ERRORS)


class VideoRFTError(Exception):
    """Base class for every error videorft raises on purpose.

    ``transient``: another attempt may succeed (a network outage, throttling). False, the
    default: the same inputs fail the same way, so retrying only wastes time.
    """

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class ConfigError(VideoRFTError):
    """params.yaml (or an override) is invalid."""


class DataValidationError(VideoRFTError):
    """An annotation or sample record is malformed or impossible.

    The message always starts with the file and, when known, the record id or line, so a user
    can jump straight to the culprit.
    """

    def __init__(self, problem: str, *, file: str | None = None, record: str | None = None):
        self.problem = problem
        self.file = file
        self.record = record
        where = ", ".join(
            part for part in (file, f"record {record!r}" if record is not None else None) if part
        )
        super().__init__(f"{where}: {problem}" if where else problem)


class UnsafePathError(DataValidationError):
    """A path in an annotation or archive would escape its root folder."""


class DownloadError(VideoRFTError):
    """A dataset could not be fetched, or its checksum did not match."""


class VideoDecodeError(VideoRFTError):
    """A video could not be decoded (corrupt, truncated, empty, missing, unknown codec)."""


class StageError(VideoRFTError):
    """A pipeline stage failed as a whole (for example too many quarantined videos).

    ``summary``: what the stage reported before failing (its summary line), such as the
    publish gate's verdict, so the orchestrator reads the failure from the stage's result
    instead of from files the stage left behind.
    """

    def __init__(
        self, *args: object, transient: bool = False, summary: dict | None = None
    ) -> None:
        super().__init__(*args, transient=transient)
        self.summary = summary
