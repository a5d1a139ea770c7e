"""What every resource handler shares: the request context, routes, ETags, paging, JSON answers."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from switchyard_emulator.errors import (
    ArmError,
    invalid_content,
    precondition_failed,
    resource_group_not_found,
)
from switchyard_emulator.ids import key_of, resource_group_id
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator


@dataclass
class Ctx:
    """One ARM request, parsed."""

    em: Emulator
    request: Request
    method: str
    path: str
    params: dict[str, str]  # path parameters, with the casing the client sent
    query: dict[str, str]  # query parameters, keys lower-cased
    raw_query: list[tuple[str, str]]
    api_version: str
    body_bytes: bytes

    @property
    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")

    @property
    def subscription(self) -> str:
        return self.em.identity.subscription_id

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def json_body(self, *, required: bool = True) -> Any:
        if not self.body_bytes.strip():
            if required:
                raise ArmError(400, "InvalidRequestContent", "The request content was empty; a JSON body is required.")
            return None
        try:
            return json.loads(self.body_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_content(f"The request content is not valid JSON: {exc}", target=None) from None


Handler = Callable[[Ctx], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: tuple[str, ...]  # lower-case literals, "{name}" parameters, a leading "{*name}" catches a prefix
    handler: Handler
    api_versions: frozenset[str] | None  # None: this route takes no ARM api-version
    resource_type: str = ""  # for api-version errors, e.g. "Microsoft.Compute/virtualMachineScaleSets"

    def match(self, segments: list[str]) -> dict[str, str] | None:
        pattern = self.pattern
        params: dict[str, str] = {}
        if pattern and pattern[0].startswith("{*"):
            tail = pattern[1:]
            if len(segments) <= len(tail):
                return None
            params[pattern[0][2:-1]] = "/" + "/".join(segments[: len(segments) - len(tail)])
            segments = segments[len(segments) - len(tail) :]
            pattern = tail
        if len(segments) != len(pattern):
            return None
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got.lower():
                return None
        return params


def route(
    methods: str,
    pattern: str,
    handler: Handler,
    api_versions: frozenset[str] | None,
    resource_type: str = "",
) -> Route:
    parts = tuple(p if p.startswith("{") else p.lower() for p in pattern.strip("/").split("/"))
    return Route(frozenset(methods.split(",")), parts, handler, api_versions, resource_type)


# -- answers -----------------------------------------------------------------------------------------


# ARM caps a request's content at 4 MB (the template and request limits of Azure Resource Manager:
# https://learn.microsoft.com/azure/azure-resource-manager/templates/best-practices#template-limits).
# The emulator refuses more before reading it: a client holding the token must not make it buffer
# (or parse) an unbounded body.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def read_body(request: Request) -> bytes:
    """The request's body, at most MAX_BODY_BYTES (413 beyond, before reading more than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_BODY_BYTES:
            raise _too_large(len(received))
    return bytes(received)


def _too_large(size: int) -> ArmError:
    return ArmError(
        413,
        "RequestEntityTooLarge",
        f"The request content ({size} bytes or more) exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes.",
    )


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body) if body is not None else b"",
        status_code=status,
        media_type="application/json; charset=utf-8" if body is not None else None,
        headers=headers,
    )


def error_response(error: ArmError) -> Response:
    return json_response(error.status, error.to_body(), error.headers)


def resource_response(
    status: int, body: dict[str, Any], etag: str | None, extra: dict[str, str] | None = None
) -> Response:
    headers = dict(extra or {})
    if etag:
        headers["ETag"] = etag
    return json_response(status, body, headers)


def page_response(ctx: Ctx, items: list[dict[str, Any]]) -> Response:
    """A list answer in pages of `page_size`, with a nextLink that keeps api-version and the query."""
    try:
        offset = int(ctx.query.get("$skiptoken", "0"))
    except ValueError:
        raise ArmError(400, "InvalidSkipToken", "The $skiptoken is not valid.", target="$skiptoken") from None
    size = ctx.em.page_size
    chunk = items[offset : offset + size]
    body: dict[str, Any] = {"value": chunk}
    if offset + size < len(items):
        query = [(k, v) for k, v in ctx.raw_query if k.lower() != "$skiptoken"]
        query.append(("$skiptoken", str(offset + size)))
        body["nextLink"] = f"{ctx.base_url}{ctx.path}?{urlencode(query)}"
    return json_response(200, body)


# -- ETags and preconditions -------------------------------------------------------------------------


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _normalize_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def check_preconditions(ctx: Ctx, existing: StoredResource | None) -> None:
    """Honour If-Match / If-None-Match: a stale ETag or `If-None-Match: *` on an existing resource -> 412."""
    if_match = ctx.header("if-match")
    if_none_match = ctx.header("if-none-match")
    if if_match is not None:
        if existing is None:
            raise precondition_failed("The condition in the If-Match header was not met: the resource does not exist.")
        candidates = [c for c in (p.strip() for p in if_match.split(",")) if c]
        if "*" not in candidates and _normalize_etag(existing.etag) not in {_normalize_etag(c) for c in candidates}:
            raise precondition_failed(
                f"The ETag in the If-Match header ({if_match}) does not match the resource's current ETag "
                f"({existing.etag}): it was modified since you read it."
            )
    if if_none_match is not None and existing is not None:
        candidates = [c.strip() for c in if_none_match.split(",")]
        if "*" in candidates or _normalize_etag(existing.etag) in {_normalize_etag(c) for c in candidates}:
            raise precondition_failed(
                "The condition in the If-None-Match header was not met: the resource already exists."
            )


# -- small shared helpers ----------------------------------------------------------------------------


def require_resource_group(ctx: Ctx, name: str) -> StoredResource:
    rg = ctx.em.store.get(key_of(resource_group_id(ctx.subscription, name)))
    if rg is None:
        raise resource_group_not_found(name)
    return rg


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (ARM PATCH semantics): objects merge, null removes, lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        existing_key = next((k for k in result if k.lower() == key.lower()), key)
        if value is None:
            result.pop(existing_key, None)
        else:
            result[existing_key] = merge_patch(result.get(existing_key), value)
    return result
