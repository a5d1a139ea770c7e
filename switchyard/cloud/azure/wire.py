"""What every port's SDK calls share: Azure's errors in switchyard's words, and ARM wire JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from switchyard.cloud.errors import CloudError, NotFoundError, StaleStateError


def no_progress(_: str) -> None:
    """The progress callback of a caller that did not ask for one."""
    return None


@contextmanager
def azure_errors(what: str) -> Iterator[None]:
    """Turn SDK exceptions into switchyard's, keeping Azure's own message (never a token)."""
    try:
        yield
    except ResourceModifiedError as error:
        raise StaleStateError(
            f"{what}: the resource changed since it was read ({_message(error)}); observe again before deciding"
        ) from None
    except ResourceNotFoundError as error:
        raise NotFoundError(f"{what}: {_message(error)}") from None
    except HttpResponseError as error:
        if error.status_code == 412:
            raise StaleStateError(
                f"{what}: the resource changed since it was read ({_message(error)}); observe again before deciding"
            ) from None
        raise CloudError(f"{what}: {_message(error)}") from None


def _message(error: HttpResponseError) -> str:
    odata = getattr(error, "error", None)
    if odata is not None and getattr(odata, "message", None):
        return f"{odata.code}: {odata.message}"
    return str(error.message or error).splitlines()[0]


def wire(model: Any) -> dict[str, Any]:
    """An SDK model (or dict) as ARM wire JSON."""
    if isinstance(model, dict):
        return model
    return model.as_dict()


def iso_duration(seconds: float) -> str:
    """Whole seconds as an ISO 8601 duration the way Azure writes them: 60 -> PT1M, 90 -> PT1M30S,
    86400 -> P1D (metric intervals, autoscale grains, windows and cooldowns)."""
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"
