"""Virtual networks (with subnets) and public IP addresses: minimal, so that real-Azure-shaped
topologies validate (scale-set NICs and gateway IP configurations reference a subnet, a gateway
frontend may reference a public IP). A subnet may name a network security group
(properties.networkSecurityGroup.id), which must exist; on an Application Gateway v2 subnet it must
let Azure's infrastructure in (resources/gateways.py check_infrastructure_access), and the gateway's
listeners enforce its inbound rules. Every instance and gateway listens on loopback (addresses.py)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import azure.mgmt.network.models as nm
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    new_etag,
    page_response,
    require_resource_group,
    resource_response,
    route,
)
from switchyard_emulator.errors import ArmError, bad_request, not_found
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import (
    ResourceKind,
    check_name,
    new_guid,
    referrers,
    require_location,
    tags_of,
)
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Network"
_USERS = ("microsoft.compute/virtualmachinescalesets", "microsoft.network/applicationgateways")


def _network(value: str, target: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise bad_request(
            f"'{value}' is not a valid address prefix (CIDR).",
            target=target,
            code="InvalidAddressPrefixFormat",
        ) from None


class Networks:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.vnets = ResourceKind(em, NS, "virtualNetworks")
        self.subnets = ResourceKind(em, NS, "virtualNetworks", "subnets")
        self.public_ips = ResourceKind(em, NS, "publicIPAddresses")

    def routes(self) -> list[Route]:
        v = apiversions.NETWORK
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
        vnet = rg + "/virtualNetworks/{name}"
        pip = rg + "/publicIPAddresses/{name}"
        return [
            route("GET", rg + "/virtualNetworks", self.list_vnets, v, "Microsoft.Network/virtualNetworks"),
            route("GET", vnet, self.get_vnet, v, "Microsoft.Network/virtualNetworks"),
            route("PUT", vnet, self.put_vnet, v, "Microsoft.Network/virtualNetworks"),
            route("PATCH", vnet, self.patch_vnet_tags, v, "Microsoft.Network/virtualNetworks"),
            route("DELETE", vnet, self.delete_vnet, v, "Microsoft.Network/virtualNetworks"),
            route("GET", vnet + "/subnets", self.list_subnets, v, "Microsoft.Network/virtualNetworks/subnets"),
            route(
                "GET",
                vnet + "/subnets/{subnet}",
                self.get_subnet,
                v,
                "Microsoft.Network/virtualNetworks/subnets",
            ),
            route(
                "PUT",
                vnet + "/subnets/{subnet}",
                self.put_subnet,
                v,
                "Microsoft.Network/virtualNetworks/subnets",
            ),
            route(
                "DELETE",
                vnet + "/subnets/{subnet}",
                self.delete_subnet,
                v,
                "Microsoft.Network/virtualNetworks/subnets",
            ),
            route("GET", rg + "/publicIPAddresses", self.list_pips, v, "Microsoft.Network/publicIPAddresses"),
            route("GET", pip, self.get_pip, v, "Microsoft.Network/publicIPAddresses"),
            route("PUT", pip, self.put_pip, v, "Microsoft.Network/publicIPAddresses"),
            route("PATCH", pip, self.patch_pip_tags, v, "Microsoft.Network/publicIPAddresses"),
            route("DELETE", pip, self.delete_pip, v, "Microsoft.Network/publicIPAddresses"),
        ]

    # -- virtual networks --------------------------------------------------------------------------

    async def list_vnets(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        items = self.em.store.of_type(self.vnets.type_key, rg_key=ctx.params["rg"])
        return page_response(ctx, [self.render_vnet(r) for r in items])

    async def get_vnet(self, ctx: Ctx) -> Response:
        existing = self.vnets.get_or_404(ctx, ctx.params["name"])
        return resource_response(200, self.render_vnet(existing), existing.etag)

    def render_vnet(self, resource: StoredResource) -> dict[str, Any]:
        body = dict(resource.body)
        body["etag"] = resource.etag
        return body

    async def put_vnet(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "virtual network")
        vnet_id, existing = self.vnets.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(nm.VirtualNetwork))
        location = require_location(body, existing)
        props = body.get("properties", {})
        prefixes = props.get("addressSpace", {}).get("addressPrefixes", [])
        if not prefixes:
            raise bad_request(
                "A virtual network needs at least one address prefix.",
                target="properties.addressSpace.addressPrefixes",
            )
        spaces = [_network(p, f"properties.addressSpace.addressPrefixes[{i}]") for i, p in enumerate(prefixes)]
        subnets = props.get("subnets", [])
        seen: set[str] = set()
        rendered_subnets = []
        for i, subnet in enumerate(subnets):
            target = f"properties.subnets[{i}]"
            subnet_name = subnet.get("name")
            if not subnet_name:
                raise bad_request("Every subnet needs a name.", target=f"{target}.name")
            if subnet_name.lower() in seen:
                raise bad_request(f"Subnet name '{subnet_name}' is used twice.", target=f"{target}.name")
            seen.add(subnet_name.lower())
            rendered_subnets.append(self._subnet_body(vnet_id, subnet, spaces, target))
        if existing is not None:
            self._refuse_removing_used_subnets(existing, seen)
        self._check_gateway_subnets(rendered_subnets)
        etag = new_etag()
        out_props = {
            **{k: v for k, v in props.items() if k != "subnets"},
            "subnets": rendered_subnets,
            "provisioningState": "Succeeded",
            "resourceGuid": existing.body["properties"]["resourceGuid"] if existing else new_guid(),
            "virtualNetworkPeerings": props.get("virtualNetworkPeerings", []),
            "enableDdosProtection": props.get("enableDdosProtection", False),
        }
        stored = {
            "id": vnet_id,
            "name": name if existing is None else existing.body["name"],
            "type": self.vnets.full_type,
            "location": location,
            **tags_of(body),
            "properties": out_props,
        }
        if existing is not None:
            stored["id"] = existing.id
        resource = StoredResource(
            key=key_of(vnet_id),
            id=stored["id"],
            type_key=self.vnets.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=etag,
        )
        self.em.store.put(resource)
        await self.em.gateways.refresh_all()  # a subnet's NSG may have changed
        return resource_response(200 if existing else 201, self.render_vnet(resource), etag)

    def _check_gateway_subnets(self, subnets: list[dict[str, Any]]) -> None:
        """An NSG associated with an Application Gateway v2 subnet must let Azure's infrastructure in:
        the association is refused otherwise ("Deployment or network security group (NSG) attach fails
        and returns ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup", Microsoft's
        troubleshooting guide for Application Gateway deployment failures)."""
        for subnet in subnets:
            nsg_ref = subnet["properties"].get("networkSecurityGroup")
            if nsg_ref:
                nsg = self.em.store.get(key_of(nsg_ref["id"]))
                assert nsg is not None  # checked by _subnet_body
                self.em.gateways.check_infrastructure_access(subnet["id"], nsg)

    def _subnet_body(self, vnet_id: str, subnet: dict[str, Any], spaces: list[Any], target: str) -> dict[str, Any]:
        props = subnet.get("properties", {})
        prefixes = props.get("addressPrefixes") or ([props["addressPrefix"]] if props.get("addressPrefix") else [])
        if not prefixes:
            raise bad_request("A subnet needs an address prefix.", target=f"{target}.properties.addressPrefix")
        for j, prefix in enumerate(prefixes):
            where = (
                f"{target}.properties.addressPrefix"
                if "addressPrefix" in props
                else (f"{target}.properties.addressPrefixes[{j}]")
            )
            net = _network(prefix, where)
            if not any(net.version == s.version and net.subnet_of(s) for s in spaces):
                raise bad_request(
                    f"Subnet prefix {prefix} is not within the virtual network's address space.",
                    target=where,
                    code="NetcfgSubnetRangeOutsideVnet",
                )
        nsg_ref = props.get("networkSecurityGroup")
        if nsg_ref is not None:
            target_nsg = f"{target}.properties.networkSecurityGroup.id".lstrip(".")
            _, nsg = self.em.nsgs.kind.resolve(nsg_ref.get("id"), target_nsg)
            props = {**props, "networkSecurityGroup": {"id": nsg.id}}
        return {
            "name": subnet["name"],
            "id": f"{vnet_id}/subnets/{subnet['name']}",
            "etag": new_etag(),
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "properties": {**props, "provisioningState": "Succeeded"},
        }

    def _refuse_removing_used_subnets(self, existing: StoredResource, keep: set[str]) -> None:
        for subnet in existing.body["properties"].get("subnets", []):
            if subnet["name"].lower() in keep:
                continue
            users = referrers(self.em, subnet["id"], type_keys=_USERS)
            if users:
                raise ArmError(
                    400,
                    "InUseSubnetCannotBeDeleted",
                    f"Subnet {subnet['name']} is in use by {', '.join(users)} and cannot be deleted.",
                )

    async def patch_vnet_tags(self, ctx: Ctx) -> Response:
        existing = self.vnets.replace_tags(ctx, nm.TagsObject)
        return resource_response(200, self.render_vnet(existing), existing.etag)

    async def delete_vnet(self, ctx: Ctx) -> Response:
        _, existing = self.vnets.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        users = referrers(self.em, existing.id, type_keys=_USERS)
        if users:
            raise ArmError(
                400,
                "InUseSubnetCannotBeDeleted",
                f"Virtual network {existing.body['name']} has subnets in use by {', '.join(users)}.",
            )
        self.em.store.delete(existing.key)
        return json_response(200, None)

    # -- subnets (children of the vnet's body) -----------------------------------------------------

    def _vnet_and_subnet(self, ctx: Ctx) -> tuple[StoredResource, dict[str, Any] | None]:
        vnet = self.vnets.get_or_404(ctx, ctx.params["name"])
        for subnet in vnet.body["properties"].get("subnets", []):
            if subnet["name"].lower() == ctx.params.get("subnet", "").lower():
                return vnet, subnet
        return vnet, None

    async def list_subnets(self, ctx: Ctx) -> Response:
        vnet = self.vnets.get_or_404(ctx, ctx.params["name"])
        return page_response(ctx, vnet.body["properties"].get("subnets", []))

    async def get_subnet(self, ctx: Ctx) -> Response:
        _, subnet = self._vnet_and_subnet(ctx)
        if subnet is None:
            raise not_found("Microsoft.Network/virtualNetworks/subnets", ctx.params["subnet"], ctx.params["rg"])
        return resource_response(200, subnet, subnet.get("etag"))

    async def put_subnet(self, ctx: Ctx) -> Response:
        vnet, subnet = self._vnet_and_subnet(ctx)
        body = validate(ctx.json_body(), typespec_schema(nm.Subnet))
        body["name"] = subnet["name"] if subnet else ctx.params["subnet"]
        check_name(body["name"], "subnet")
        spaces = [_network(p, "addressSpace") for p in vnet.body["properties"]["addressSpace"]["addressPrefixes"]]
        rendered = self._subnet_body(vnet.id, body, spaces, "")
        rendered["properties"] = {k: v for k, v in rendered["properties"].items()}
        self._check_gateway_subnets([rendered])
        subnets = [s for s in vnet.body["properties"]["subnets"] if s is not subnet]
        subnets.append(rendered)
        vnet.body["properties"]["subnets"] = subnets
        vnet.etag = new_etag()
        self.em.store.put(vnet)
        await self.em.gateways.refresh_all()  # the subnet's NSG may have changed
        return resource_response(200 if subnet else 201, rendered, rendered["etag"])

    async def delete_subnet(self, ctx: Ctx) -> Response:
        vnet, subnet = self._vnet_and_subnet(ctx)
        if subnet is None:
            return json_response(204, None)
        self._refuse_removing_used_subnets(
            vnet, {s["name"].lower() for s in vnet.body["properties"]["subnets"] if s is not subnet}
        )
        vnet.body["properties"]["subnets"] = [s for s in vnet.body["properties"]["subnets"] if s is not subnet]
        vnet.etag = new_etag()
        self.em.store.put(vnet)
        return json_response(200, None)

    def subnet(self, subnet_id: str) -> tuple[StoredResource, dict[str, Any]] | None:
        """The virtual network and the subnet body an id names, if both exist."""
        parts = subnet_id.rstrip("/").split("/")
        if len(parts) < 3 or parts[-2].lower() != "subnets":
            return None
        vnet = self.em.store.get(key_of("/".join(parts[:-2])))
        for subnet in vnet.body["properties"].get("subnets", []) if vnet else []:
            if subnet["name"].lower() == parts[-1].lower():
                assert vnet is not None
                return vnet, subnet
        return None

    def subnet_nsg(self, subnet_id: str) -> StoredResource | None:
        """The network security group associated with a subnet, if any."""
        found = self.subnet(subnet_id)
        nsg_ref = found[1]["properties"].get("networkSecurityGroup") if found else None
        return self.em.store.get(key_of(nsg_ref["id"])) if nsg_ref else None

    def subnets_using_nsg(self, nsg_id: str) -> list[str]:
        """Ids of the subnets associated with a network security group."""
        wanted = key_of(nsg_id)
        return [
            subnet["id"]
            for vnet in self.em.store.of_type(self.vnets.type_key)
            for subnet in vnet.body["properties"].get("subnets", [])
            if key_of((subnet["properties"].get("networkSecurityGroup") or {}).get("id", "/")) == wanted
        ]

    def subnet_exists(self, subnet_id: Any, target: str) -> None:
        """400 naming `target` unless `subnet_id` is an existing subnet."""
        if not isinstance(subnet_id, str):
            raise bad_request(f"{target} must be a subnet id.", target=target)
        parts = subnet_id.rstrip("/").split("/")
        if len(parts) < 3 or parts[-2].lower() != "subnets":
            raise bad_request(f"'{subnet_id}' is not a subnet id.", target=target, code="InvalidResourceReference")
        vnet = self.em.store.get(key_of("/".join(parts[:-2])))
        names = {s["name"].lower() for s in (vnet.body["properties"]["subnets"] if vnet else [])}
        if parts[-1].lower() not in names:
            raise ArmError(
                400,
                "InvalidResourceReference",
                f"Subnet {subnet_id} referenced by {target} was not found.",
                target=target,
            )

    # -- public IP addresses -----------------------------------------------------------------------

    async def list_pips(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        items = self.em.store.of_type(self.public_ips.type_key, rg_key=ctx.params["rg"])
        return page_response(ctx, [self.render_pip(r) for r in items])

    def render_pip(self, resource: StoredResource) -> dict[str, Any]:
        body = dict(resource.body)
        body["etag"] = resource.etag
        users = [
            g
            for g in self.em.store.of_type("microsoft.network/applicationgateways")
            for f in g.body["properties"].get("frontendIPConfigurations", [])
            if key_of(f.get("properties", {}).get("publicIPAddress", {}).get("id", "")) == resource.key
        ]
        props = dict(body["properties"])
        if users:
            gateway = users[0]
            fip = next(
                f
                for f in gateway.body["properties"]["frontendIPConfigurations"]
                if key_of(f.get("properties", {}).get("publicIPAddress", {}).get("id", "")) == resource.key
            )
            props["ipConfiguration"] = {"id": fip["id"]}
        body["properties"] = props
        return body

    async def get_pip(self, ctx: Ctx) -> Response:
        existing = self.public_ips.get_or_404(ctx, ctx.params["name"])
        return resource_response(200, self.render_pip(existing), existing.etag)

    async def put_pip(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "public IP address")
        pip_id, existing = self.public_ips.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(nm.PublicIPAddress))
        location = require_location(body, existing)
        props = body.get("properties", {})
        sku = body.get("sku") or {"name": "Standard", "tier": "Regional"}
        etag = new_etag()
        stored = {
            "id": existing.id if existing else pip_id,
            "name": existing.body["name"] if existing else name,
            "type": self.public_ips.full_type,
            "location": location,
            **tags_of(body),
            "sku": sku,
            "properties": {
                **props,
                "publicIPAllocationMethod": props.get("publicIPAllocationMethod", "Static"),
                "publicIPAddressVersion": props.get("publicIPAddressVersion", "IPv4"),
                "idleTimeoutInMinutes": props.get("idleTimeoutInMinutes", 4),
                # every gateway frontend of the emulator listens on loopback
                "ipAddress": "127.0.0.1",
                "provisioningState": "Succeeded",
                "resourceGuid": existing.body["properties"]["resourceGuid"] if existing else new_guid(),
            },
        }
        if body.get("zones"):
            stored["zones"] = body["zones"]
        resource = StoredResource(
            key=key_of(pip_id),
            id=stored["id"],
            type_key=self.public_ips.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=etag,
        )
        self.em.store.put(resource)
        return resource_response(200 if existing else 201, self.render_pip(resource), etag)

    async def patch_pip_tags(self, ctx: Ctx) -> Response:
        existing = self.public_ips.replace_tags(ctx, nm.TagsObject)
        return resource_response(200, self.render_pip(existing), existing.etag)

    async def delete_pip(self, ctx: Ctx) -> Response:
        _, existing = self.public_ips.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        users = referrers(self.em, existing.id, type_keys=_USERS)
        if users:
            raise ArmError(
                400,
                "PublicIPAddressInUse",
                f"Public IP address {existing.body['name']} is in use by {', '.join(users)} and cannot be deleted.",
            )
        self.em.store.delete(existing.key)
        return json_response(200, None)
