"""Helpers the resource modules share: tracked-resource envelopes, lookups, references in use."""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from switchyard_emulator.common import (
    Ctx,
    check_preconditions,
    new_etag,
    page_response,
    require_resource_group,
    resource_response,
)
from switchyard_emulator.errors import ArmError, bad_request, not_found, reference_not_found
from switchyard_emulator.ids import ResourceId, key_of, parse_resource_id, provider_id
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,78}[A-Za-z0-9_]$|^[A-Za-z0-9]$")


def check_name(name: str, what: str, *, pattern: re.Pattern[str] = _NAME) -> None:
    if not pattern.match(name):
        raise ArmError(
            400,
            "InvalidResourceName",
            f"The {what} name '{name}' is invalid: use 1-80 letters, digits, '_', '.' and '-', starting "
            "with a letter or digit and ending with a letter, digit or '_'.",
        )


def require_location(body: dict[str, Any], existing: StoredResource | None) -> str:
    location = body.get("location")
    if not location:
        if existing is not None:
            return str(existing.body.get("location", ""))
        raise bad_request("The resource location is required.", target="location", code="LocationRequired")
    if existing is not None and _norm_region(location) != _norm_region(str(existing.body.get("location", ""))):
        raise bad_request(
            f"The location of an existing resource cannot be changed (it is '{existing.body.get('location')}').",
            target="location",
            code="LocationNotAvailableForResourceType",
        )
    return str(location)


def tags_of(body: dict[str, Any]) -> dict[str, Any]:
    """{"tags": ...} when the client sent tags (Azure omits the key otherwise)."""
    return {"tags": body["tags"]} if body.get("tags") is not None else {}


def _norm_region(value: str) -> str:
    return value.replace(" ", "").lower()


def same_region(a: str, b: str) -> bool:
    return _norm_region(a) == _norm_region(b)


class ResourceKind:
    """Locates one kind of provider resource by the path parameters of its routes."""

    def __init__(self, em: Emulator, namespace: str, *types: str) -> None:
        self.em = em
        self.namespace = namespace
        self.types = types
        self.full_type = "/".join((namespace, *types))
        self.type_key = self.full_type.lower()

    def make_id(self, ctx: Ctx, *names: str) -> str:
        pairs: list[str] = []
        for t, n in zip(self.types, names, strict=True):
            pairs += [t, n]
        return provider_id(ctx.subscription, ctx.params["rg"], self.namespace, *pairs)

    def lookup(self, ctx: Ctx, *names: str) -> tuple[str, StoredResource | None]:
        """The key for these names and the stored resource, after checking the resource group exists."""
        require_resource_group(ctx, ctx.params["rg"])
        resource_id = self.make_id(ctx, *names)
        return resource_id, self.em.store.get(key_of(resource_id))

    def get_or_404(self, ctx: Ctx, *names: str) -> StoredResource:
        _, existing = self.lookup(ctx, *names)
        if existing is None:
            raise not_found(self.full_type, "/".join(names), ctx.params["rg"])
        return existing

    def replace_tags(self, ctx: Ctx, tags_model: type) -> StoredResource:
        """PATCH of a resource's tags (Azure's "UpdateTags" operation): If-Match honoured, the body
        checked against the TagsObject model of the resource's API, a new ETag."""
        existing = self.get_or_404(ctx, ctx.params["name"])
        check_preconditions(ctx, existing)
        tags = validate(ctx.json_body(), typespec_schema(tags_model))
        existing.body["tags"] = tags.get("tags", {})
        existing.etag = new_etag()
        self.em.store.put(existing)
        return existing

    def resolve(self, value: Any, target: str) -> tuple[ResourceId, StoredResource]:
        """A body's reference to a resource of this kind: it must parse and exist (else 400 naming
        `target`)."""
        if not isinstance(value, str):
            raise bad_request(f"{target} must be a resource id string.", target=target)
        rid = parse_resource_id(value, target=target)
        if rid.type_key != self.type_key:
            raise bad_request(f"{target} must reference a {self.full_type}, not '{value}'.", target=target)
        resource = self.em.store.get(rid.key)
        if resource is None:
            raise reference_not_found(target, value, f"no {self.full_type} with that id exists")
        return rid, resource


class RenderedKind:
    """The reads every top-level resource kind answers the same way: list in the subscription, list
    in a resource group (404 when the group does not exist), get one (404 when it does not exist),
    each item as the kind's `render` shows it. A handler class sets `em` and `kind`, defines
    `render`, and inherits these."""

    em: Emulator
    kind: ResourceKind

    def render(self, resource: StoredResource) -> dict[str, Any]:
        raise NotImplementedError

    async def list_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(self.kind.type_key, subscription=ctx.subscription)
        return page_response(ctx, [self.render(r) for r in items])

    async def list_by_group(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        items = self.em.store.of_type(self.kind.type_key, rg_key=ctx.params["rg"])
        return page_response(ctx, [self.render(r) for r in items])

    async def get(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        return resource_response(200, self.render(existing), existing.etag)


def new_guid() -> str:
    return str(uuid.uuid4())


def referrers(em: Emulator, target_id: str, *, type_keys: tuple[str, ...]) -> list[str]:
    """Ids of resources (of the given types) whose stored body or scale-set models mention `target_id`
    or anything under it (used to refuse deleting what is in use, as Azure does)."""
    needle = key_of(target_id)
    found: list[str] = []
    for type_key in type_keys:
        for resource in em.store.of_type(type_key):
            if resource.key == needle or resource.key.startswith(needle + "/"):
                continue
            texts = [json.dumps(resource.body)]
            if type_key == "microsoft.compute/virtualmachinescalesets":
                texts += [json.dumps(p) for p in em.store.models(resource.key).values()]
            if any(_mentions(text.lower(), needle) for text in texts):
                found.append(resource.id)
    return found


def _mentions(text: str, needle: str) -> bool:
    start = 0
    while True:
        index = text.find(needle, start)
        if index < 0:
            return False
        end = index + len(needle)
        if end == len(text) or text[end] in '"/':
            return True
        start = end
