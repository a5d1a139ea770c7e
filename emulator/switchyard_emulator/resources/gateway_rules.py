"""The rules of an Application Gateway that reach beyond its own body: its frontends (one public,
at most one private: a static, free address of the gateway's subnet), the loopback addresses and
ports its listeners bind, its subnet's NSG letting Azure's infrastructure in, and backend pools that
NIC IP configurations and explicit addresses may not share. Also the gateway's resource type and the
frontend helpers the body checks and the data-plane spec share.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from switchyard_emulator import netsec
from switchyard_emulator.addresses import PUBLIC_FRONTEND_HOST, loopback_alias
from switchyard_emulator.dataplane.api import GatewaySpec
from switchyard_emulator.errors import ArmError, bad_request
from switchyard_emulator.ids import key_of
from switchyard_emulator.resources.base import referrers
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Network"
TYPE = "Microsoft.Network/applicationGateways"
TYPE_KEY = TYPE.lower()


def check_ports(
    em: Emulator, gateway_id: str, listener_endpoints: dict[str, tuple[str, int]], mine: GatewaySpec | None
) -> None:
    """Each listener binds its frontend's loopback address and its port: those of new listeners
    must be free and unused by other gateways (the emulator's limit: Azure gateways have
    addresses of their own, here every public frontend shares 127.0.0.1)."""
    already = {(listener.host, listener.port) for listener in mine.listeners} if mine else set()
    for other in em.store.of_type(TYPE_KEY):
        if other.key == key_of(gateway_id):
            continue
        taken = _listener_endpoints(other.body["properties"])
        for listener, endpoint in listener_endpoints.items():
            if endpoint in taken:
                raise ArmError(
                    409,
                    "FrontendPortInUse",
                    f"Frontend port {endpoint[1]} of listener '{listener}' is already used on {endpoint[0]} by "
                    f"gateway {other.id}.",
                    target="properties.frontendPorts",
                )
    for listener, (host, port) in listener_endpoints.items():
        if (host, port) in already:
            continue
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # As the listener will bind (dataplane/gateway/listeners.py): TIME_WAIT leftovers of a
            # listener that was here do not block it, a socket in use does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise ArmError(
                409,
                "FrontendPortInUse",
                f"Frontend port {port} of listener '{listener}' cannot be bound on {host} "
                f"({exc.strerror}): another process uses it; choose a free port.",
                target="properties.frontendPorts",
            ) from None
        finally:
            probe.close()


def check_frontends(
    em: Emulator, gateway_id: str, sku_name: str, frontends: list[dict[str, Any]], gateway_subnet: str
) -> None:
    """Application Gateway v2 frontends: one public and at most one private, the private one a
    static address of the gateway's own subnet."""
    where = "properties.frontendIPConfigurations"
    public = [f for f in frontends if f["properties"].get("publicIPAddress")]
    private = [f for f in frontends if f["properties"].get("subnet") and not f["properties"].get("publicIPAddress")]
    # "Only one public IP address and one private IP address is supported"
    # (configuration-frontend-ip); codes and messages as Azure answers them
    # (hashicorp/terraform-provider-azurerm#23805)
    if len(frontends) > 2:
        raise ArmError(
            400,
            "ApplicationGatewayFrontendIpConfigurationLimitReached",
            "The number of FrontendIpConfigurations exceeds the maximum allowed value. The number of "
            f"FrontendIpConfigurations is {len(frontends)} and the maximum allowed is 2.",
            target=where,
        )
    for kind, found in (("Public", public), ("Private", private)):
        if len(found) > 1:
            raise ArmError(
                400,
                "ApplicationGatewayCannotHaveMoreThanOneIpV4FrontendIPConfiguration",
                f"Application Gateway {gateway_id} cannot have more than one FrontendIPConfigurations using "
                f"IPv4 {kind} IP.",
                target=where,
            )
    # v2 without a public frontend needs the network-isolation preview feature, which the emulator
    # does not model: "does not support Application Gateway without Public IP for the selected SKU
    # tier Standard_v2" (hashicorp/terraform-provider-azurerm#4578; code from a deployment's log)
    if not public:
        raise ArmError(
            400,
            "ApplicationGatewayFeatureCannotBeEnabledForSelectedSku",
            "Application Gateway does not support Application Gateway without Public IP for the selected SKU "
            f"tier {sku_name}. Supported SKU tiers are Standard,WAF.",
            target=where,
        )
    for frontend in private:
        i = frontends.index(frontend)
        fp = frontend["properties"]
        target = f"{where}[{i}].properties"
        subnet_id = fp["subnet"]["id"]
        if key_of(subnet_id) != key_of(gateway_subnet):
            # Azure/azure-cli#4134, #24122
            raise ArmError(
                400,
                "ApplicationGatewayFrontendIpSubnetCannotBeDifferentFromGatewaySubnet",
                f"FrontendIpConfiguration {frontend['id']} subnet {subnet_id} and gateway subnet "
                f"{gateway_subnet} can not be different.",
                target=f"{target}.subnet.id",
            )
        # "For Application Gateway v2 sku deployments, a static IP address must be defined when adding a
        # private IP address to the gateway" (configuration-frontend-ip); Azure's answer otherwise:
        # MicrosoftDocs/azure-docs#64853, #68983
        if str(fp.get("privateIPAllocationMethod") or "Dynamic").lower() != "static":
            raise ArmError(
                400,
                "ApplicationGatewayFrontendIpPrivateIpAddressInvalidAllocationType",
                f"FrontendIpConfiguration {frontend['id']} of Application Gateway with SKU tier {sku_name} can "
                "only use PrivateIPAddress with IpAllocationMethod as Static.",
                target=f"{target}.privateIPAllocationMethod",
            )
        fp["privateIPAllocationMethod"] = "Static"
        _check_private_address(em, gateway_id, fp.get("privateIPAddress"), subnet_id, f"{target}.privateIPAddress")


def _check_private_address(em: Emulator, gateway_id: str, value: Any, subnet_id: str, target: str) -> None:
    """A static private address: inside the subnet's prefix, not one Azure reserves, not taken.
    Codes from ARM's common deployment errors (PrivateIPAddressNotInSubnet,
    PrivateIPAddressInReservedRange); 'Azure reserves ... the first four and last IP address in
    each subnet' (configuration-infrastructure, "Size of the subnet")."""
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise bad_request(
            f"'{value}' is not an IPv4 address: a static private frontend needs privateIPAddress.", target=target
        ) from None
    found = em.networks.subnet(subnet_id)
    assert found is not None  # the subnet was checked to exist
    sp = found[1]["properties"]
    prefixes = sp.get("addressPrefixes") or [sp["addressPrefix"]]
    networks = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    network = next((n for n in networks if n.version == 4 and address in n), None)
    if network is None:
        raise ArmError(
            400,
            "PrivateIPAddressNotInSubnet",
            f"Private static IP address {address} does not belong to the range of subnet prefix {', '.join(prefixes)}.",
            target=target,
        )
    offset = int(address) - int(network.network_address)
    if offset < 4 or address == network.broadcast_address:
        raise ArmError(
            400,
            "PrivateIPAddressInReservedRange",
            f"Private static IP address {address} falls in a range reserved by Azure in subnet prefix "
            f"{network}: the first four and the last address of a subnet are reserved.",
            target=target,
        )
    for other in em.store.of_type(TYPE_KEY):
        if other.key == key_of(gateway_id):
            continue
        for frontend in other.body["properties"].get("frontendIPConfigurations", []):
            fp = frontend.get("properties", {})
            same_subnet = key_of((fp.get("subnet") or {}).get("id", "/")) == key_of(subnet_id)
            if same_subnet and fp.get("privateIPAddress") == str(address):
                raise ArmError(
                    400,
                    "PrivateIPAddressInUse",
                    f"Private static IP address {address} is already in use by {frontend['id']}.",
                    target=target,
                )


def check_infrastructure(gateway_id: str, subnet_id: str, nsg: StoredResource) -> None:
    """The NSG of a v2 gateway's subnet must allow, inbound with destination Any, TCP from the
    GatewayManager service tag on ports 65200-65535 and traffic from AzureLoadBalancer
    (configuration-infrastructure, "Required security rules"). Azure refuses the gateway write,
    or the NSG write or association, with ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup
    (its message as users' deployments show it: mspnp/aks-baseline#284,
    Azure/terraform-azurerm-avm-ptn-aiml-landing-zone#16). The same code for an NSG that blocks
    AzureLoadBalancer is the emulator's reading of MicrosoftDocs/azure-docs#58458; its wording is
    the emulator's."""
    rules = netsec.inbound_rules(nsg.body["properties"])
    blocking = netsec.first_blocking_rule(rules, netsec.GATEWAY_MANAGER, (65200, 65535))
    if blocking is not None:
        raise ArmError(
            400,
            "ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup",
            f"Network security group {nsg.id} blocks incoming internet traffic on ports 65200 - 65535 to subnet "
            f"{subnet_id}, associated with Application Gateway {gateway_id}. This is not permitted for "
            f"Application Gateways that have V2 Sku. (Rule '{blocking.name}' decides: allow TCP from the "
            "GatewayManager service tag to destination Any on ports 65200-65535.)",
        )
    blocking = netsec.first_blocking_rule(rules, netsec.AZURE_LOAD_BALANCER, (0, 65535))
    if blocking is not None:
        raise ArmError(
            400,
            "ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup",
            f"Network security group {nsg.id} blocks incoming traffic from AzureLoadBalancer to subnet "
            f"{subnet_id}, associated with Application Gateway {gateway_id}. This is not permitted for "
            f"Application Gateways that have V2 Sku. (Rule '{blocking.name}' decides: traffic from the "
            "AzureLoadBalancer service tag must be allowed to destination Any.)",
        )


def check_homogeneous_pool(em: Emulator, pool: dict[str, Any], target: str) -> None:
    """A pool holds NIC IP configurations or explicit addresses, never both.

    Microsoft's CLI team: "Mixing IP/FQDN and Virtual Machine targets is not allowed"
    (Azure/azure-cli#3491; shared/azure-rules.md rule 4). NICs join a pool from their own side
    (a scale set's model), so the pool is refused its addresses while any scale-set model the
    emulator keeps mentions it: the latest model (instances a manualUpgrade would move there)
    and every older model an instance still runs. The error code is the emulator's, modelled on
    the one Azure's load balancer gives for the same mix
    (CannotMixIPBasedAddressesAndIPConfigurationsOnLoadBalancerBackendAddressPool)."""
    users = referrers(em, pool["id"], type_keys=("microsoft.compute/virtualmachinescalesets",))
    if users:
        raise ArmError(
            400,
            "CannotMixIPBasedAddressesAndIPConfigurationsOnApplicationGatewayBackendAddressPool",
            f"Backend address pool '{pool['name']}' cannot have backendAddresses: the NIC IP configurations "
            f"of scale set(s) {', '.join(users)} reference it. A pool holds either NIC IP configurations "
            "or IP addresses/FQDNs, never both; put the addresses in a pool of their own.",
            target=target,
        )


def check_removed_pools(em: Emulator, existing: StoredResource, keep: dict[str, dict[str, Any]]) -> None:
    for pool in existing.body["properties"].get("backendAddressPools", []):
        if pool["name"].lower() in keep:
            continue
        users = referrers(em, pool["id"], type_keys=("microsoft.compute/virtualmachinescalesets",))
        if users:
            raise ArmError(
                400,
                "ApplicationGatewayBackendAddressPoolInUse",
                f"Backend address pool '{pool['name']}' is referenced by scale set(s) "
                f"{', '.join(users)}; remove it from their network profile first.",
                target="properties.backendAddressPools",
            )


def ref_name(ref: dict[str, Any]) -> str:
    return str(ref["id"]).rsplit("/", 1)[-1]


def is_public(frontend: dict[str, Any]) -> bool:
    return bool(frontend.get("properties", {}).get("publicIPAddress"))


def frontend_host(frontend: dict[str, Any]) -> str:
    """The loopback address a frontend's listeners bind (addresses.py): 127.0.0.1 for the public
    frontend, the alias of its static address for a private one."""
    if is_public(frontend):
        return PUBLIC_FRONTEND_HOST
    return loopback_alias(frontend["properties"]["privateIPAddress"])


def _listener_endpoints(props: dict[str, Any]) -> set[tuple[str, int]]:
    """The (loopback address, port) pairs a stored gateway's listeners bind."""
    frontends = {f["name"].lower(): f for f in props.get("frontendIPConfigurations", [])}
    ports = {p["name"].lower(): p["properties"]["port"] for p in props.get("frontendPorts", [])}
    found = set()
    for item in props.get("httpListeners", []):
        frontend = frontends.get(ref_name(item["properties"]["frontendIPConfiguration"]).lower())
        port = ports.get(ref_name(item["properties"]["frontendPort"]).lower())
        if frontend is not None and port is not None:
            found.add((frontend_host(frontend), port))
    return found
