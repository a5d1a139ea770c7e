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
        raise StaleStateError(f"{what}: the resource changed since it was read ({_message(error)})") from None
    except ResourceNotFoundError as error:
        raise NotFoundError(f"{what}: {_message(error)}") from None
    except HttpResponseError as error:
        if error.status_code == 412:
            raise StaleStateError(f"{what}: the resource changed since it was read ({_message(error)})") from None
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
