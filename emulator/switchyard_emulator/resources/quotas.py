"""Compute quotas: what `usage.list` and `resource_skus.list` answer, and the quota a scale set
write must stay within (Azure refuses it with 409 OperationNotAllowed, nothing written).

Usage is computed from the scale sets the emulator holds: capacity x the vCPUs of their size, per
location, as the regional total ("cores"), per VM family, and as VM and scale set counts. Limits
start from the emulator's settings (`--vcpu-quota`) and can be changed at run time through
`/switchyard/quotas` (GET, PUT {"cores": N, "standardBSFamily": M, ...}), like the fault settings.
Sizes outside the table below count their vCPUs from the size name (Standard_D16s_v3 -> 16) and
belong to no family quota.

Resource SKU restrictions: a size of the table can be made unavailable to the subscription in some
locations or zones at run time (`/switchyard/skus`, GET, PUT {"Standard_B2s": {"restricted_locations":
["westeurope"], "restricted_zones": {"westus": ["1"]}}}). `resource_skus.list` then shows them as
Azure's ResourceSkuRestrictions, and a scale set write of that size there is refused (409
SkuNotAvailable), whatever the quota says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import Ctx, Route, json_response, route
from switchyard_emulator.errors import ArmError, bad_request

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

SCALE_SET_TYPE_KEY = "microsoft.compute/virtualmachinescalesets"


@dataclass(frozen=True)
class VmSize:
    name: str
    family: str
    vcpus: int
    memory_gb: float


# The sizes a switchyard fleet typically uses (vCPUs and memory as Azure publishes them).
SIZES = {
    size.name.lower(): size
    for size in (
        VmSize("Standard_B1s", "standardBSFamily", 1, 1),
        VmSize("Standard_B1ms", "standardBSFamily", 1, 2),
        VmSize("Standard_B2s", "standardBSFamily", 2, 4),
        VmSize("Standard_B2ms", "standardBSFamily", 2, 8),
        VmSize("Standard_B4ms", "standardBSFamily", 4, 16),
        VmSize("Standard_D2s_v3", "standardDSv3Family", 2, 8),
        VmSize("Standard_D4s_v3", "standardDSv3Family", 4, 16),
        VmSize("Standard_D8s_v3", "standardDSv3Family", 8, 32),
        VmSize("Standard_D2s_v5", "standardDSv5Family", 2, 8),
        VmSize("Standard_D4s_v5", "standardDSv5Family", 4, 16),
        VmSize("Standard_F2s_v2", "standardFSv2Family", 2, 4),
    )
}
_VCPUS_IN_NAME = re.compile(r"^standard_[a-z]+(\d+)", re.IGNORECASE)

REGIONAL_CORES = "cores"
_LOCALIZED = {
    "cores": "Total Regional vCPUs",
    "virtualMachines": "Virtual Machines",
    "virtualMachineScaleSets": "Virtual Machine Scale Sets",
}
DEFAULT_VCPU_QUOTA = 350
DEFAULT_VM_QUOTA = 25000
DEFAULT_SCALE_SET_QUOTA = 2500


def size_of(name: str) -> VmSize:
    known = SIZES.get(name.lower())
    if known is not None:
        return known
    match = _VCPUS_IN_NAME.match(name)
    return VmSize(name, "", int(match.group(1)) if match else 1, 0)


def vm_memory_bytes(name: str) -> int | None:
    """The memory of a VM size in bytes, None for a size outside the table. Azure publishes sizes'
    memory in GiB ("Memory: GiB" in the size tables; resource SKUs' MemoryGB capability)."""
    size = size_of(name)
    return int(size.memory_gb * (1 << 30)) if size.memory_gb > 0 else None


def _region(location: str) -> str:
    return location.replace(" ", "").lower()


class Quotas:
    def __init__(self, em: Emulator, vcpu_quota: int = DEFAULT_VCPU_QUOTA) -> None:
        self.em = em
        # size (lower-case) -> its restrictions for this subscription
        self.restrictions: dict[str, SkuRestriction] = {}
        # usage name -> limit; a family without an entry shares the regional limit
        self.limits: dict[str, int] = {
            REGIONAL_CORES: vcpu_quota,
            "virtualMachines": DEFAULT_VM_QUOTA,
            "virtualMachineScaleSets": DEFAULT_SCALE_SET_QUOTA,
        }

    def routes(self) -> list[Route]:
        return [
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/usages",
                self.list_usages,
                apiversions.SCALE_SETS,
                "Microsoft.Compute/locations/usages",
            ),
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Compute/skus",
                self.list_skus,
                apiversions.RESOURCE_SKUS,
                "Microsoft.Compute/skus",
            ),
        ]

    # -- usage -------------------------------------------------------------------------------------

    def usage(self, location: str) -> dict[str, int]:
        """name -> current value in `location`, from the scale sets held there."""
        counts: dict[str, int] = {REGIONAL_CORES: 0, "virtualMachines": 0, "virtualMachineScaleSets": 0}
        for size in SIZES.values():
            counts.setdefault(size.family, 0)
        for resource in self.em.store.of_type(SCALE_SET_TYPE_KEY):
            if _region(str(resource.body.get("location", ""))) == _region(location):
                _count(counts, resource.body.get("sku") or {}, +1)
        return counts

    def limit(self, name: str) -> int:
        return self.limits.get(name, self.limits[REGIONAL_CORES])

    def check_scale_set_write(self, key: str, location: str, size_name: str, capacity: int) -> None:
        """409 OperationNotAllowed, as Azure answers, when the write would exceed a quota it raises."""
        before = self.usage(location)
        after = dict(before)
        existing = self.em.store.get(key)
        if existing is not None:  # its location cannot change: it is counted in `before`
            _count(after, existing.body.get("sku") or {}, -1)
        _count(after, {"name": size_name, "capacity": capacity}, +1)
        size = size_of(size_name)
        for name, label in ((REGIONAL_CORES, "Total Regional Cores"), (size.family, f"{size.family} Cores")):
            if not name or after[name] <= before[name] or after[name] <= self.limit(name):
                continue
            limit, used = self.limit(name), before[name]
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation could not be completed as it results in exceeding approved {label} quota. "
                f"Additional details - Deployment Model: Resource Manager, Location: {location}, "
                f"Current Limit: {limit}, Current Usage: {used}, Additional Required: {after[name] - used}, "
                f"(Minimum) New Limit Required: {after[name]}.",
            )

    def check_sku_available(self, resource_id: str, location: str, size_name: str, zones: list[str]) -> None:
        """409 SkuNotAvailable when the size is restricted for the subscription where the scale set is.

        Azure's error for a size that is not available in a location or zone, whatever the quota
        ("Resolve errors for SKU not available", learn.microsoft.com/azure/azure-resource-manager/
        troubleshooting/error-sku-not-available; the size's `restrictions` in Resource SKUs - List,
        reasonCode NotAvailableForSubscription). The HTTP status (409) is what users' logs show; the
        documentation gives none. Every create or update of the scale set is refused, scale in
        included: the request deploys the size again."""
        restriction = self.restrictions.get(size_name.lower())
        if restriction is None:
            return
        region = _region(location)
        blocked_zones = sorted(set(zones) & set(restriction.zones.get(region, [])))
        if region not in restriction.locations and not blocked_zones:
            return
        raise ArmError(
            409,
            "SkuNotAvailable",
            f"The requested size for resource '{resource_id}' is currently not available in location "
            f"'{location}' zones '{','.join(zones)}' for subscription '{self.em.identity.subscription_id}'. "
            "Please try another size or deploy to a different location or zones. "
            "See https://aka.ms/azureskunotavailable for details.",
            target="sku.name",
        )

    async def list_usages(self, ctx: Ctx) -> Response:
        location = ctx.params["location"]
        counts = self.usage(location)
        value = [
            {
                "unit": "Count",
                "currentValue": current,
                "limit": self.limit(name),
                "name": {"value": name, "localizedValue": _LOCALIZED.get(name, f"{name} vCPUs")},
            }
            for name, current in counts.items()
        ]
        return json_response(200, {"value": value})

    async def list_skus(self, ctx: Ctx) -> Response:
        wanted = _location_filter(ctx.query.get("$filter"))
        locations = sorted(
            {str(r.body.get("location", "")) for r in self.em.store.of_type("microsoft.resources/resourcegroups")}
        )
        if wanted is not None:
            locations = [wanted]
        value = [
            _sku(size, location, self.restrictions.get(size.name.lower()))
            for location in locations
            for size in SIZES.values()
        ]
        return json_response(200, {"value": value})

    # -- the control endpoint ---------------------------------------------------------------------

    def configure(self, data: Any) -> None:
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in data.items()
        ):
            raise bad_request('Quotas are a JSON object of usage name -> limit, e.g. {"cores": 20}.')
        self.limits.update(data)

    def status(self) -> dict[str, int]:
        return dict(self.limits)

    def configure_skus(self, data: Any) -> None:
        """PUT /switchyard/skus: each size named gets exactly the restrictions given ({} clears them);
        sizes not named keep theirs. An invalid body changes nothing."""
        if not isinstance(data, dict):
            raise bad_request(
                'SKU restrictions are a JSON object: {"Standard_B2s": {"restricted_locations": ["westeurope"], '
                '"restricted_zones": {"westus": ["1"]}}}.'
            )
        parsed: dict[str, SkuRestriction | None] = {}
        for name, value in data.items():
            size = SIZES.get(str(name).lower())
            if size is None:
                known = ", ".join(s.name for s in SIZES.values())
                raise bad_request(f"Unknown size '{name}'; the emulator's sizes are {known}.", target=name)
            parsed[size.name.lower()] = _parse_restriction(value, size.name)
        for key, restriction in parsed.items():
            if restriction is None:
                self.restrictions.pop(key, None)
            else:
                self.restrictions[key] = restriction

    def sku_status(self) -> dict[str, Any]:
        return {
            SIZES[key].name: {
                "restricted_locations": sorted(r.locations),
                "restricted_zones": {loc: sorted(zones) for loc, zones in sorted(r.zones.items())},
            }
            for key, r in sorted(self.restrictions.items())
        }


@dataclass(frozen=True)
class SkuRestriction:
    locations: frozenset[str]  # normalized region names where the size is not available
    zones: dict[str, list[str]]  # normalized region -> zones where it is not available


def _parse_restriction(value: Any, size: str) -> SkuRestriction | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or set(value) - {"restricted_locations", "restricted_zones"}:
        raise bad_request(
            f"The restrictions of {size} are an object with 'restricted_locations' (list of locations) and/or "
            "'restricted_zones' (location -> list of zones).",
            target=size,
        )
    locations = value.get("restricted_locations", [])
    zones = value.get("restricted_zones", {})
    if not isinstance(locations, list) or not all(isinstance(x, str) and x for x in locations):
        raise bad_request(
            "restricted_locations must be a list of location names.", target=f"{size}.restricted_locations"
        )
    if not isinstance(zones, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(z, str) and z for z in v)
        for k, v in zones.items()
    ):
        raise bad_request("restricted_zones must map a location to a list of zones.", target=f"{size}.restricted_zones")
    if not locations and not any(zones.values()):
        return None
    return SkuRestriction(
        locations=frozenset(_region(x) for x in locations),
        zones={_region(k): sorted(set(v)) for k, v in zones.items() if v},
    )


def _count(counts: dict[str, int], sku: dict[str, Any], sign: int) -> None:
    """Add (sign +1) or take away (-1) one scale set of this sku in `counts`."""
    size, capacity = size_of(str(sku.get("name", ""))), int(sku.get("capacity", 0))
    counts[REGIONAL_CORES] += sign * size.vcpus * capacity
    if size.family:
        counts[size.family] = counts.get(size.family, 0) + sign * size.vcpus * capacity
    counts["virtualMachines"] += sign * capacity
    counts["virtualMachineScaleSets"] += sign


def _location_filter(expression: str | None) -> str | None:
    if not expression:
        return None
    match = re.fullmatch(r"\s*location\s+eq\s+'([^']+)'\s*", expression, re.IGNORECASE)
    if match is None:
        raise bad_request(
            f"Unsupported $filter '{expression}': the emulator answers only \"location eq '<location>'\".",
            target="$filter",
        )
    return match.group(1)


def _restrictions(restriction: SkuRestriction | None, location: str) -> list[dict[str, Any]]:
    """Azure's ResourceSkuRestrictions for one location (Resource SKUs - List; the shape of
    learn.microsoft.com's SKU-not-available and AKS zone troubleshooting pages)."""
    if restriction is None:
        return []
    region = _region(location)
    found: list[dict[str, Any]] = []
    if region in restriction.locations:
        found.append(
            {
                "type": "Location",
                "values": [location],
                "restrictionInfo": {"locations": [location], "zones": []},
                "reasonCode": "NotAvailableForSubscription",
            }
        )
    zones = restriction.zones.get(region)
    if zones:
        found.append(
            {
                "type": "Zone",
                "values": [location],
                "restrictionInfo": {"locations": [location], "zones": list(zones)},
                "reasonCode": "NotAvailableForSubscription",
            }
        )
    return found


def _sku(size: VmSize, location: str, restriction: SkuRestriction | None = None) -> dict[str, Any]:
    return {
        "resourceType": "virtualMachines",
        "name": size.name,
        "tier": "Standard",
        "size": size.name.split("_", 1)[1],
        "family": size.family,
        "locations": [location],
        "locationInfo": [{"location": location, "zones": []}],
        "capabilities": [
            {"name": "vCPUs", "value": str(size.vcpus)},
            {"name": "MemoryGB", "value": f"{size.memory_gb:g}"},
        ],
        "restrictions": _restrictions(restriction, location),
    }
