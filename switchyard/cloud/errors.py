"""Errors the cloud adapter raises, in words a platform engineer acts on."""

from __future__ import annotations


class CloudError(Exception):
    """A cloud call failed in a way retrying the same call will not fix by itself."""


class NotFoundError(CloudError):
    """A resource that must exist does not."""


class StaleStateError(CloudError):
    """The resource changed after switchyard observed it (ETag mismatch): observe again, then decide."""


class OperationFailedError(CloudError):
    """A long-running operation ended in Failed."""
