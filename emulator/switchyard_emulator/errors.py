"""ARM errors: one exception type that knows its HTTP status and renders Azure's error body.

Every refusal the emulator makes goes through `ArmError`, so every client sees the same shape Azure
Resource Manager answers with: `{"error": {"code", "message", "target", "details"}}`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

_Settings = TypeVar("_Settings", bound=BaseModel)


class ArmError(Exception):
    """An ARM error answer. `target` names the offending field path (e.g. `properties.sku.capacity`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[ArmError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []
        self.headers = headers or {}

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details:
            error["details"] = [d.to_error() for d in self.details]
        return error

    def to_body(self) -> dict[str, Any]:
        return {"error": self.to_error()}

    def __repr__(self) -> str:
        return f"ArmError({self.status}, {self.code!r}, {self.message!r}, target={self.target!r})"


def validated_settings(model: type[_Settings], data: object, code: str) -> _Settings:
    """An admin route's JSON body as `model`, or a 400 `code` naming the first offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise ArmError(400, code, f"{where}: {first['msg']}", target=where) from None


def bad_request(message: str, *, target: str | None = None, code: str = "InvalidParameter") -> ArmError:
    return ArmError(400, code, message, target=target)


def invalid_content(message: str, *, target: str | None) -> ArmError:
    """The body does not fit the resource's schema (unknown field, wrong type, missing field)."""
    return ArmError(400, "InvalidRequestContent", message, target=target)


def not_found(resource_type: str, name: str, resource_group: str | None = None) -> ArmError:
    where = f" under resource group '{resource_group}'" if resource_group else ""
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}'{where} was not found. For more details please go to "
        "https://aka.ms/ARMResourceNotFoundFix",
    )


def resource_group_not_found(name: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


def conflict(message: str, *, code: str = "Conflict", target: str | None = None) -> ArmError:
    return ArmError(409, code, message, target=target)


def precondition_failed(message: str) -> ArmError:
    return ArmError(412, "PreconditionFailed", message)


def reference_not_found(target: str, reference: str, what: str) -> ArmError:
    """A body references a resource (or sub-resource) that does not exist: 400 naming the field."""
    return ArmError(
        400,
        "InvalidResourceReference",
        f"Resource {reference} referenced by {target} was not found: {what}.",
        target=target,
    )


def unsupported(message: str, *, target: str | None = None) -> ArmError:
    """Valid Azure input the emulator deliberately cannot honour (documented in the emulator README)."""
    return ArmError(400, "NotSupportedByEmulator", message, target=target)
