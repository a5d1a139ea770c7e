"""Errors the data plane raises for bad Azure Monitor / Log Analytics queries.

The control plane turns them into the wire answers Azure gives: `MetricsQueryError` into an ARM
error body (`{"error": {"code", "message"}}`) with `status`, `LogsQueryError` into a Log Analytics
error body (`{"error": {"code", "message", "innererror"}}`) with `status`.
"""

from __future__ import annotations


class DataPlaneQueryError(Exception):
    """A query the caller got wrong; `status` is the HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class MetricsQueryError(DataPlaneQueryError):
    """A bad Metrics - List / Metric Definitions query (unknown metric, bad timespan, ...)."""


class LogsQueryError(DataPlaneQueryError):
    """A KQL query outside the supported subset, or malformed (answered as a Log Analytics 400)."""

    def to_body(self) -> dict[str, dict[str, str]]:
        # Log Analytics nests the detail in innererror; "BadArgumentError" is its top-level code.
        return {
            "error": {
                "code": "BadArgumentError",
                "message": "The request had some invalid properties",
                "innererror": {"code": self.code, "message": self.message},  # type: ignore[dict-item]
            }
        }
