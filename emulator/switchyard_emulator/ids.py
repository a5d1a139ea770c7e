"""ARM resource ids: parsing, building, and the case-insensitive key every lookup uses.

ARM treats paths and names case-insensitively but returns names with the casing they were created
with. So the store keys every resource by its lower-cased id (`key_of`) and keeps the original id.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard_emulator.errors import ArmError


def key_of(resource_id: str) -> str:
    """The canonical, case-insensitive key of an ARM id (lower case, no trailing slash)."""
    return "/" + resource_id.strip("/").lower()


def vnet_key_of(subnet_id: str) -> str:
    """The key of the virtual network a subnet id (.../virtualNetworks/V/subnets/S) is in."""
    return key_of(subnet_id.rstrip("/").rsplit("/", 2)[0])


@dataclass(frozen=True)
class ResourceId:
    """A parsed provider resource id: /subscriptions/S/resourceGroups/G/providers/NS/t1/n1[/t2/n2...]."""

    subscription: str
    resource_group: str
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[-1]

    @property
    def full_type(self) -> str:
        """e.g. 'Microsoft.Compute/galleries/images/versions' (casing as written)."""
        return "/".join((self.namespace, *self.types))

    @property
    def type_key(self) -> str:
        return self.full_type.lower()

    @property
    def id(self) -> str:
        parts = [f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers"]
        parts.append(self.namespace)
        for t, n in zip(self.types, self.names, strict=True):
            parts.append(f"{t}/{n}")
        return "/".join(parts)

    @property
    def key(self) -> str:
        return key_of(self.id)

    def parent(self) -> ResourceId | None:
        if len(self.types) < 2:
            return None
        return ResourceId(self.subscription, self.resource_group, self.namespace, self.types[:-1], self.names[:-1])


def parse_resource_id(value: str, *, target: str) -> ResourceId:
    """Parse a provider resource id or answer 400 naming `target` (the body field holding it)."""
    segments = [s for s in value.strip().split("/") if s != ""] if isinstance(value, str) else []
    ok = (
        len(segments) >= 8
        and len(segments) % 2 == 0
        and segments[0].lower() == "subscriptions"
        and segments[2].lower() == "resourcegroups"
        and segments[4].lower() == "providers"
        and value.startswith("/")
    )
    if not ok:
        raise ArmError(
            400,
            "LinkedInvalidPropertyId",
            f"Property id '{value}' at path '{target}' is invalid. Expect fully qualified resource Id that "
            "start with '/subscriptions/{subscriptionId}' or '/providers/{resourceProviderNamespace}/'.",
            target=target,
        )
    rest = segments[6:]
    return ResourceId(
        subscription=segments[1],
        resource_group=segments[3],
        namespace=segments[5],
        types=tuple(rest[0::2]),
        names=tuple(rest[1::2]),
    )


def resource_group_id(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


def provider_id(subscription: str, resource_group: str, namespace: str, *type_name_pairs: str) -> str:
    """provider_id(sub, rg, 'Microsoft.Compute', 'galleries', 'g', 'images', 'i')."""
    if len(type_name_pairs) % 2:
        raise ValueError("provider_id needs (type, name) pairs")
    tail = "/".join(type_name_pairs)
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{namespace}/{tail}"
