"""Network security groups and their security rules (Microsoft.Network/networkSecurityGroups).

Validated as Azure validates them (network-security-groups-overview; error codes as Azure answers
them in users' logs): priorities 100-4096 (SecurityRuleInvalidPriority), one rule per priority and
direction (SecurityRuleConflict), prefixes that are `*`, an address, a CIDR block without host bits
or a service tag (SecurityRuleInvalidAddressPrefix), ports `*`/`N`/`N-M` in 0-65535, one range per
string (SecurityRuleInvalidPortRange). Every NSG answers Azure's six default rules. An NSG a subnet
uses cannot be deleted (InUseNetworkSecurityGroupCannotBeDeleted).

An NSG on an Application Gateway v2 subnet must let Azure's infrastructure in; a write that would
block it is refused like the gateway write itself (resources/gateways.py
check_infrastructure_access). Enforcement of the rules is the gateway data plane's (netsec.py).
Application security groups are valid Azure the emulator does not model (NotSupportedByEmulator).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import azure.mgmt.network.models as nm
from starlette.responses import Response

from switchyard_emulator import apiversions, netsec
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    new_etag,
    page_response,
    resource_response,
    route,
)
from switchyard_emulator.errors import ArmError, bad_request, not_found, unsupported
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import (
    RenderedKind,
    ResourceKind,
    check_name,
    new_guid,
    require_location,
    tags_of,
)
from switchyard_emulator.schema import typespec_schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Network"
TYPE = "Microsoft.Network/networkSecurityGroups"
TYPE_KEY = TYPE.lower()
RULE_TYPE = f"{TYPE}/securityRules"
DEFAULT_RULE_TYPE = f"{TYPE}/defaultSecurityRules"
_PROTOCOLS = {p.lower(): p for p in ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*")}
_ACCESS = {"allow": "Allow", "deny": "Deny"}
_DIRECTIONS = {"inbound": "Inbound", "outbound": "Outbound"}
# "up to 80 characters ... begin with a word character, and ... end with a word character or with
# '_'. The name can contain word characters, '.', '-', or '_'" (network-security-groups-overview)
_RULE_NAME = re.compile(r"^\w([\w.\-]{0,78}\w)?$")


class SecurityGroups(RenderedKind):
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.kind = ResourceKind(em, NS, "networkSecurityGroups")

    def routes(self) -> list[Route]:
        v = apiversions.NETWORK
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups"
        one = rg + "/{name}"
        rule = one + "/securityRules/{rule}"
        default = one + "/defaultSecurityRules/{rule}"
        return [
            route(
                "GET", "/subscriptions/{sub}/providers/Microsoft.Network/networkSecurityGroups", self.list_all, v, TYPE
            ),
            route("GET", rg, self.list_by_group, v, TYPE),
            route("GET", one, self.get, v, TYPE),
            route("PUT", one, self.put, v, TYPE),
            route("PATCH", one, self.patch_tags, v, TYPE),
            route("DELETE", one, self.delete, v, TYPE),
            route("GET", one + "/securityRules", self.list_rules, v, RULE_TYPE),
            route("GET", rule, self.get_rule, v, RULE_TYPE),
            route("PUT", rule, self.put_rule, v, RULE_TYPE),
            route("DELETE", rule, self.delete_rule, v, RULE_TYPE),
            route("GET", one + "/defaultSecurityRules", self.list_default_rules, v, DEFAULT_RULE_TYPE),
            route("GET", default, self.get_default_rule, v, DEFAULT_RULE_TYPE),
        ]

    # -- reading -----------------------------------------------------------------------------------

    def render(self, resource: StoredResource) -> dict[str, Any]:
        body = {**resource.body, "etag": resource.etag}
        props = dict(body["properties"])
        props["securityRules"] = [{**r, "etag": resource.etag} for r in props.get("securityRules", [])]
        props["defaultSecurityRules"] = self._default_rules(resource.id, resource.etag)
        subnets = self.em.networks.subnets_using_nsg(resource.id)
        if subnets:
            props["subnets"] = [{"id": s} for s in subnets]
        body["properties"] = props
        return body

    @staticmethod
    def _default_rules(nsg_id: str, etag: str) -> list[dict[str, Any]]:
        return [
            {
                "name": d["name"],
                "id": f"{nsg_id}/defaultSecurityRules/{d['name']}",
                "etag": etag,
                "type": DEFAULT_RULE_TYPE,
                "properties": netsec.default_rule_properties(d),
            }
            for d in netsec.DEFAULT_RULES
        ]

    async def list_rules(self, ctx: Ctx) -> Response:
        return page_response(
            ctx, self.render(self.kind.get_or_404(ctx, ctx.params["name"]))["properties"]["securityRules"]
        )

    async def get_rule(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        for rule in self.render(existing)["properties"]["securityRules"]:
            if rule["name"].lower() == ctx.params["rule"].lower():
                return resource_response(200, rule, existing.etag)
        raise not_found(RULE_TYPE, ctx.params["rule"], ctx.params["rg"])

    async def list_default_rules(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        return page_response(ctx, self._default_rules(existing.id, existing.etag))

    async def get_default_rule(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        for rule in self._default_rules(existing.id, existing.etag):
            if rule["name"].lower() == ctx.params["rule"].lower():
                return resource_response(200, rule, existing.etag)
        raise not_found(DEFAULT_RULE_TYPE, ctx.params["rule"], ctx.params["rg"])

    # -- writing -----------------------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        check_name(name, "network security group")
        nsg_id, existing = self.kind.lookup(ctx, name)
        check_preconditions(ctx, existing)
        body = validate(ctx.json_body(), typespec_schema(nm.NetworkSecurityGroup))
        location = require_location(body, existing)
        if existing is not None:
            nsg_id = existing.id
        props = body.get("properties", {})
        rules = [
            self._rule(nsg_id, r, f"properties.securityRules[{i}]")
            for i, r in enumerate(props.get("securityRules", []))
        ]
        _check_conflicts(rules, "properties.securityRules")
        stored_props = {
            **{k: v for k, v in props.items() if k != "securityRules"},
            "securityRules": rules,
            "provisioningState": "Succeeded",
            "resourceGuid": existing.body["properties"]["resourceGuid"] if existing else new_guid(),
        }
        resource = StoredResource(
            key=key_of(nsg_id),
            id=nsg_id,
            type_key=TYPE_KEY,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body={
                "id": nsg_id,
                "name": existing.body["name"] if existing else name,
                "type": TYPE,
                "location": location,
                **tags_of(body),
                "properties": stored_props,
            },
            etag=new_etag(),
        )
        await self._commit(resource)
        return resource_response(200 if existing else 201, self.render(resource), resource.etag)

    async def put_rule(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        rule_name = ctx.params["rule"]
        body = validate(ctx.json_body(), typespec_schema(nm.SecurityRule))
        body["name"] = rule_name
        rules = list(existing.body["properties"].get("securityRules", []))
        index = next((i for i, r in enumerate(rules) if r["name"].lower() == rule_name.lower()), None)
        if index is not None:
            body["name"] = rules[index]["name"]
        rule = self._rule(existing.id, body, "")
        if index is None:
            rules.append(rule)
        else:
            rules[index] = rule
        _check_conflicts(rules, "properties")
        updated = _with_rules(existing, rules)
        await self._commit(updated)
        return resource_response(200 if index is not None else 201, {**rule, "etag": updated.etag}, updated.etag)

    async def delete_rule(self, ctx: Ctx) -> Response:
        existing = self.kind.get_or_404(ctx, ctx.params["name"])
        rules = existing.body["properties"].get("securityRules", [])
        kept = [r for r in rules if r["name"].lower() != ctx.params["rule"].lower()]
        if len(kept) == len(rules):
            return json_response(204, None)
        await self._commit(_with_rules(existing, kept))
        return json_response(200, None)

    async def _commit(self, resource: StoredResource) -> None:
        """Refuse the write if a v2 gateway's subnet would block Azure's infrastructure, else store
        it and have the gateways' listeners enforce the new rules (new connections only, as Azure:
        "Network security group rules only affect new connections")."""
        for subnet_id in self.em.networks.subnets_using_nsg(resource.id):
            self.em.gateways.check_infrastructure_access(subnet_id, resource)
        self.em.store.put(resource)
        await self.em.gateways.refresh_all()

    async def patch_tags(self, ctx: Ctx) -> Response:
        existing = self.kind.replace_tags(ctx, nm.TagsObject)
        return resource_response(200, self.render(existing), existing.etag)

    async def delete(self, ctx: Ctx) -> Response:
        _, existing = self.kind.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        check_preconditions(ctx, existing)
        users = self.em.networks.subnets_using_nsg(existing.id)
        if users:
            raise ArmError(
                400,
                "InUseNetworkSecurityGroupCannotBeDeleted",
                f"Network security group {existing.id} cannot be deleted because it is in use by the following "
                f"resources: {', '.join(users)}. In order to delete the Network security group, remove the "
                "association with the resource(s).",
            )
        self.em.store.delete(existing.key)
        return json_response(200, None)

    # -- rules -------------------------------------------------------------------------------------

    def _rule(self, nsg_id: str, rule: dict[str, Any], target: str) -> dict[str, Any]:
        """One security rule, checked and completed as Azure stores it."""
        prefix = f"{target}." if target else ""
        name = rule.get("name")
        if not isinstance(name, str) or not _RULE_NAME.match(name):
            raise ArmError(
                400,
                "InvalidResourceName",
                f"Security rule name '{name}' is invalid: up to 80 word characters, '.', '-' or '_', starting with a "
                "word character and ending with a word character or '_'.",
                target=f"{prefix}name",
            )
        props = dict(rule.get("properties") or {})
        where = f"{prefix}properties"
        for field, choices in (("protocol", _PROTOCOLS), ("access", _ACCESS), ("direction", _DIRECTIONS)):
            value = props.get(field)
            if not isinstance(value, str) or value.lower() not in choices:
                raise bad_request(
                    f"Security rule {name}: {field} must be one of {', '.join(choices.values())}.",
                    target=f"{where}.{field}",
                )
            props[field] = choices[value.lower()]
        priority = props.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 100 <= priority <= 4096:
            raise ArmError(
                400,
                "SecurityRuleInvalidPriority",
                f"Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096.",
                target=f"{where}.priority",
            )
        for side in ("source", "destination"):
            if props.get(f"{side}ApplicationSecurityGroups"):
                raise unsupported(
                    "Application security groups are not modelled by the emulator; use address prefixes.",
                    target=f"{where}.{side}ApplicationSecurityGroups",
                )
            _check_addresses(props, side, where)
            _check_ports(props, side, where)
        props["provisioningState"] = "Succeeded"
        return {"name": name, "id": f"{nsg_id}/securityRules/{name}", "type": RULE_TYPE, "properties": props}


def _one_or_many(props: dict[str, Any], one: str, many: str, where: str) -> list[Any]:
    """A rule's field that comes singular or plural (sourcePortRange / sourcePortRanges): exactly
    one of the two, and not empty."""
    values: list[Any] = list(props.get(many) or [])
    if props.get(one) and values:
        raise bad_request(f"Give {one} or {many}, not both.", target=f"{where}.{many}")
    if props.get(one):
        values = [props[one]]
    if not values:
        raise bad_request(f"A security rule needs {one} (or {many}).", target=f"{where}.{one}")
    return values


def _check_addresses(props: dict[str, Any], side: str, where: str) -> None:
    one, many = f"{side}AddressPrefix", f"{side}AddressPrefixes"
    values = _one_or_many(props, one, many, where)
    for i, value in enumerate(values):
        target = f"{where}.{many}[{i}]" if props.get(many) else f"{where}.{one}"
        try:
            netsec.check_prefix(value)
        except ValueError:
            raise _invalid_prefix(value, target) from None
        # "you can't specify multiple service tags or application groups in a single rule"
        # (network-security-groups-overview, augmented security rules)
        if len(values) > 1 and netsec.tag_of(str(value)) is not None:
            raise _invalid_prefix(value, target)
    props.setdefault(many, [])


def _invalid_prefix(value: Any, target: str) -> ArmError:
    return ArmError(
        400,
        "SecurityRuleInvalidAddressPrefix",
        f"Security rule has invalid Address prefix. Value provided: {value}",
        target=target,
    )


def _check_ports(props: dict[str, Any], side: str, where: str) -> None:
    one, many = f"{side}PortRange", f"{side}PortRanges"
    values = _one_or_many(props, one, many, where)
    for i, value in enumerate(values):
        try:
            netsec.parse_ports(value)
        except ValueError:
            raise ArmError(
                400,
                "SecurityRuleInvalidPortRange",
                f"Security rule has invalid Port range. Value provided: {value}. Value should be an integer OR "
                "integer range with '-' delimiter. Valid range 0-65535.",
                target=f"{where}.{many}[{i}]" if props.get(many) else f"{where}.{one}",
            ) from None
    props.setdefault(many, [])


def _check_conflicts(rules: list[dict[str, Any]], target: str) -> None:
    """'You can't create two security rules with the same priority and direction.'"""
    seen: dict[tuple[int, str], str] = {}
    names: set[str] = set()
    for rule in rules:
        if rule["name"].lower() in names:
            raise bad_request(f"Security rule name '{rule['name']}' is used twice.", target=target)
        names.add(rule["name"].lower())
        props = rule["properties"]
        key = (props["priority"], props["direction"])
        if key in seen:
            raise ArmError(
                400,
                "SecurityRuleConflict",
                f"Security rule {rule['name']} conflicts with rule {seen[key]}. Rules cannot have the same Priority "
                "and Direction.",
                target=target,
            )
        seen[key] = rule["name"]


def _with_rules(existing: StoredResource, rules: list[dict[str, Any]]) -> StoredResource:
    body = {**existing.body, "properties": {**existing.body["properties"], "securityRules": rules}}
    return StoredResource(
        key=existing.key,
        id=existing.id,
        type_key=existing.type_key,
        rg_key=existing.rg_key,
        parent_key=existing.parent_key,
        body=body,
        etag=new_etag(),
        internal=dict(existing.internal),
    )
