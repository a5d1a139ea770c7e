"""Network security group rules as Azure evaluates them, and how the emulator's loopback addresses
stand for a virtual network's addresses. Pure functions: the ARM layer (resources/nsgs.py,
resources/gateway_rules.py, gateway_spec.py) and the gateway worker both use them.

Azure's model (learn.microsoft.com/azure/virtual-network/network-security-groups-overview):
rules are processed in priority order, lower numbers first, and "once traffic matches a rule,
processing stops"; custom rules have priorities 100-4096, and every NSG carries default rules at
65000+ (AllowVnetInBound, AllowAzureLoadBalancerInBound, DenyAllInBound and the outbound three).
A source or destination is `*` (Any), an IP address, a CIDR block or a service tag; ports are `*`,
`N` or `N-M` (0-65535). For inbound traffic "network security groups process traffic after Azure
translates public IP addresses to private IP addresses".

How loopback connections map onto that (the emulator's choice, documented in its README):
* A source address the emulator holds for the virtual network (a scale-set instance's address,
  which its NIC reports as privateIPAddress, or a private frontend's loopback alias) carries the
  VirtualNetwork tag.
* Every other source (127.0.0.1 and any other loopback address) stands for a client outside the
  virtual network: the Internet tag.
* A CIDR or IP in a rule is compared with the connection's real loopback source address, so a rule
  naming 127.0.0.1/32 (or an instance's privateIPAddress) matches exactly that source.
* Infrastructure sources never come from loopback: GatewayManager (public Azure addresses, so also
  Internet and AzureCloud) and AzureLoadBalancer (the host's virtual IP 168.63.129.16, which the
  VirtualNetwork tag also covers: service-tags-overview).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

# service-tags-overview ("Available service tags"); a tag may carry a region (Storage.WestUS)
SERVICE_TAGS = frozenset(
    tag.lower()
    for tag in (
        "ActionGroup",
        "ApiManagement",
        "ApplicationInsightsAvailability",
        "AppConfiguration",
        "AppService",
        "AppServiceManagement",
        "AzureActiveDirectory",
        "AzureActiveDirectoryDomainServices",
        "AzureAdvancedThreatProtection",
        "AzureArcInfrastructure",
        "AzureAttestation",
        "AzureBackup",
        "AzureBotService",
        "AzureCloud",
        "AzureCognitiveSearch",
        "AzureConnectors",
        "AzureContainerRegistry",
        "AzureCosmosDB",
        "AzureDatabricks",
        "AzureDataExplorerManagement",
        "AzureDataLake",
        "AzureDevSpaces",
        "AzureDevOps",
        "AzureDigitalTwins",
        "AzureEventGrid",
        "AzureFrontDoor.Frontend",
        "AzureFrontDoor.Backend",
        "AzureFrontDoor.FirstParty",
        "AzureInformationProtection",
        "AzureIoTHub",
        "AzureKeyVault",
        "AzureLoadBalancer",
        "AzureMachineLearning",
        "AzureMonitor",
        "AzureOpenDatasets",
        "AzurePlatformDNS",
        "AzurePlatformIMDS",
        "AzurePlatformLKM",
        "AzureResourceManager",
        "AzureSignalR",
        "AzureSiteRecovery",
        "AzureTrafficManager",
        "BatchNodeManagement",
        "CognitiveServicesManagement",
        "DataFactory",
        "DataFactoryManagement",
        "Dynamics365ForMarketingEmail",
        "EOPExternalPublishedIPs",
        "EventHub",
        "GatewayManager",
        "GuestAndHybridManagement",
        "HDInsight",
        "Internet",
        "LogicApps",
        "LogicAppsManagement",
        "MicrosoftCloudAppSecurity",
        "MicrosoftContainerRegistry",
        "PowerBI",
        "PowerQueryOnline",
        "ServiceBus",
        "ServiceFabric",
        "Sql",
        "SqlManagement",
        "Storage",
        "StorageSyncService",
        "WindowsVirtualDesktop",
        "VirtualNetwork",
    )
)
ANY_ADDRESS = frozenset({"*", "any", "0.0.0.0/0"})
AZURE_LOAD_BALANCER_IP = ipaddress.IPv4Address("168.63.129.16")
ALL_PORTS = ((0, 65535),)
PortRanges = tuple[tuple[int, int], ...]

# Azure's default rules, in every NSG (network-security-groups-overview, "Default security rules")
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "AllowVnetInBound",
        "description": "Allow inbound traffic from all VMs in VNET",
        "priority": 65000,
        "direction": "Inbound",
        "access": "Allow",
        "sourceAddressPrefix": "VirtualNetwork",
        "destinationAddressPrefix": "VirtualNetwork",
    },
    {
        "name": "AllowAzureLoadBalancerInBound",
        "description": "Allow inbound traffic from azure load balancer",
        "priority": 65001,
        "direction": "Inbound",
        "access": "Allow",
        "sourceAddressPrefix": "AzureLoadBalancer",
        "destinationAddressPrefix": "*",
    },
    {
        "name": "DenyAllInBound",
        "description": "Deny all inbound traffic",
        "priority": 65500,
        "direction": "Inbound",
        "access": "Deny",
        "sourceAddressPrefix": "*",
        "destinationAddressPrefix": "*",
    },
    {
        "name": "AllowVnetOutBound",
        "description": "Allow outbound traffic from all VMs to all VMs in VNET",
        "priority": 65000,
        "direction": "Outbound",
        "access": "Allow",
        "sourceAddressPrefix": "VirtualNetwork",
        "destinationAddressPrefix": "VirtualNetwork",
    },
    {
        "name": "AllowInternetOutBound",
        "description": "Allow outbound traffic from all VMs to Internet",
        "priority": 65001,
        "direction": "Outbound",
        "access": "Allow",
        "sourceAddressPrefix": "*",
        "destinationAddressPrefix": "Internet",
    },
    {
        "name": "DenyAllOutBound",
        "description": "Deny all outbound traffic",
        "priority": 65500,
        "direction": "Outbound",
        "access": "Deny",
        "sourceAddressPrefix": "*",
        "destinationAddressPrefix": "*",
    },
)


def default_rule_properties(rule: dict[str, Any]) -> dict[str, Any]:
    """A default rule's properties as Azure answers them."""
    return {
        "description": rule["description"],
        "protocol": "*",
        "sourcePortRange": "*",
        "destinationPortRange": "*",
        "sourceAddressPrefix": rule["sourceAddressPrefix"],
        "destinationAddressPrefix": rule["destinationAddressPrefix"],
        "access": rule["access"],
        "priority": rule["priority"],
        "direction": rule["direction"],
        "sourcePortRanges": [],
        "destinationPortRanges": [],
        "sourceAddressPrefixes": [],
        "destinationAddressPrefixes": [],
        "provisioningState": "Succeeded",
    }


# -- parsing ---------------------------------------------------------------------------------------


def tag_of(prefix: str) -> str | None:
    """The service tag a prefix names (lower case, region dropped), or None if it is not a tag."""
    lowered = prefix.strip().lower()
    if lowered in SERVICE_TAGS:
        return lowered
    base, _, region = lowered.rpartition(".")
    if base in SERVICE_TAGS and region.isalnum():
        return base
    return None


def check_prefix(prefix: Any) -> None:
    """ValueError unless `prefix` is `*`/Any, an IPv4 address, a CIDR block without host bits, or a
    service tag (Azure refuses 20.20.20.20/16: "Security rule has invalid Address prefix")."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(str(prefix))
    value = prefix.strip()
    if value.lower() in ANY_ADDRESS or tag_of(value) is not None:
        return
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        raise ValueError(value) from None


def parse_ports(value: Any) -> tuple[int, int]:
    """`*`, `N` or `N-M` within 0-65535 (one range per string, as Azure requires)."""
    if not isinstance(value, str):
        raise ValueError(str(value))
    text = value.strip()
    if text in ("*", "Any", "any"):
        return ALL_PORTS[0]
    low_text, sep, high_text = text.partition("-")
    if not low_text.isdigit() or (sep and not high_text.isdigit()):
        raise ValueError(text)
    low, high = int(low_text), int(high_text) if sep else int(low_text)
    if not 0 <= low <= high <= 65535:
        raise ValueError(text)
    return low, high


def port_ranges(values: list[str]) -> PortRanges:
    return tuple(sorted(parse_ports(v) for v in values)) or ALL_PORTS


def covers(ranges: PortRanges, port: int) -> bool:
    return any(low <= port <= high for low, high in ranges)


# -- sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a flow comes from: an address (or None for a tag-only identity) and its service tags."""

    address: ipaddress.IPv4Address | None
    tags: frozenset[str]


GATEWAY_MANAGER = Source(None, frozenset({"gatewaymanager", "internet", "azurecloud"}))
AZURE_LOAD_BALANCER = Source(AZURE_LOAD_BALANCER_IP, frozenset({"azureloadbalancer", "virtualnetwork"}))


def client_source(address: str, vnet_addresses: frozenset[str]) -> Source:
    """A loopback client: VirtualNetwork if the emulator holds its address for the network, else
    the Internet (see the module docstring)."""
    tag = "virtualnetwork" if address in vnet_addresses else "internet"
    return Source(ipaddress.IPv4Address(address), frozenset({tag}))


def source_matches(prefix: str, source: Source) -> bool:
    value = prefix.strip()
    if value.lower() in ANY_ADDRESS:
        return True
    tag = tag_of(value)
    if tag is not None:
        return tag in source.tags
    if source.address is None:
        # a tag-only identity (GatewayManager: public Azure addresses) is inside 0.0.0.0/0 only,
        # which ANY_ADDRESS covered
        return False
    return source.address in ipaddress.IPv4Network(value, strict=False)


# -- destinations ----------------------------------------------------------------------------------


def destination_covers_subnet(prefix: str, subnet: list[ipaddress.IPv4Network]) -> bool:
    """Does a rule's destination cover every address of the gateway's subnet? After Azure's
    translation a client's flow reaches one of the gateway's instance addresses in its subnet, which
    is why Azure tells you to use "your application gateway's entire subnet IP prefix" as the
    destination (configuration-infrastructure, "Inbound rules")."""
    value = prefix.strip()
    if value.lower() in ANY_ADDRESS:
        return True
    tag = tag_of(value)
    if tag is not None:
        return tag == "virtualnetwork"
    network = ipaddress.IPv4Network(value, strict=False)
    return bool(subnet) and all(s.subnet_of(network) for s in subnet)


def destination_is(prefix: str, address: ipaddress.IPv4Address, tag: str) -> bool:
    """Does a rule's destination cover one address (carrying one service tag)?"""
    value = prefix.strip()
    if value.lower() in ANY_ADDRESS:
        return True
    found = tag_of(value)
    if found is not None:
        return found == tag
    return address in ipaddress.IPv4Network(value, strict=False)


def destination_is_any(prefix: str) -> bool:
    """Azure's infrastructure traffic to an Application Gateway must be allowed with destination
    Any (configuration-infrastructure: GatewayManager "and Any destination"; AzureLoadBalancer,
    destination Any); only `*`, Any or 0.0.0.0/0 cover it (a VirtualNetwork destination was
    refused, MicrosoftDocs/azure-docs#58458)."""
    return prefix.strip().lower() in ANY_ADDRESS


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One inbound rule, parsed: the ARM layer builds these from an NSG's rules plus the defaults."""

    name: str
    priority: int
    allow: bool
    protocol: str  # lower case: "tcp", "udp", "*", ...
    sources: tuple[str, ...]
    source_ports: PortRanges
    destinations: tuple[str, ...]
    destination_ports: PortRanges

    @property
    def tcp(self) -> bool:
        return self.protocol in ("*", "tcp")


def inbound_rules(nsg_properties: dict[str, Any]) -> list[Rule]:
    """An NSG's inbound rules (its own and Azure's defaults) in the order Azure processes them."""
    rules = [
        _rule(r["name"], r.get("properties", {}))
        for r in nsg_properties.get("securityRules", [])
        if str(r.get("properties", {}).get("direction", "")).lower() == "inbound"
    ]
    rules += [_rule(d["name"], default_rule_properties(d)) for d in DEFAULT_RULES if d["direction"] == "Inbound"]
    return sorted(rules, key=lambda r: r.priority)


def _rule(name: str, props: dict[str, Any]) -> Rule:
    return Rule(
        name=name,
        priority=int(props["priority"]),
        allow=str(props["access"]).lower() == "allow",
        protocol=str(props.get("protocol", "*")).lower(),
        sources=tuple(_many(props, "sourceAddressPrefix", "sourceAddressPrefixes")),
        source_ports=port_ranges(_many(props, "sourcePortRange", "sourcePortRanges")),
        destinations=tuple(_many(props, "destinationAddressPrefix", "destinationAddressPrefixes")),
        destination_ports=port_ranges(_many(props, "destinationPortRange", "destinationPortRanges")),
    )


def _many(props: dict[str, Any], one: str, many: str) -> list[str]:
    values = list(props.get(many) or [])
    if props.get(one):
        values.append(props[one])
    return values


def first_blocking_rule(rules: list[Rule], source: Source, ports: tuple[int, int]) -> Rule | None:
    """The rule that denies some TCP flow from `source` (any source port, destination Any) to a
    port in `ports`, or None when every such flow is allowed.

    Walks the rules by priority, keeping the destination ports not yet decided. An Allow rule
    decides the ports it covers only if it covers every source port (the infrastructure's source
    ports are unknown); a Deny rule that matches any of the undecided ports blocks."""
    undecided = [ports]
    for rule in rules:
        if not undecided:
            return None
        if not rule.tcp or not any(source_matches(p, source) for p in rule.sources):
            continue
        if not any(destination_is_any(p) for p in rule.destinations):
            continue
        hit = [_intersect(u, r) for u in undecided for r in rule.destination_ports]
        hit = [h for h in hit if h is not None]
        if not hit:
            continue
        if not rule.allow:
            return rule
        if rule.source_ports == ALL_PORTS:
            for low, high in rule.destination_ports:
                undecided = [part for u in undecided for part in _subtract(u, (low, high))]
    return None


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if low <= high else None


def _subtract(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    if _intersect(a, b) is None:
        return [a]
    parts = []
    if a[0] < b[0]:
        parts.append((a[0], b[0] - 1))
    if b[1] < a[1]:
        parts.append((b[1] + 1, a[1]))
    return parts
