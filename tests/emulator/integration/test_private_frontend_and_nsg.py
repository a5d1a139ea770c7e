"""A private test listener, as Azure does it: an Application Gateway v2 private frontend (a static
address of the gateway's subnet, listened on at its loopback alias) behind the subnet's network
security group, which the gateway's data plane enforces per connection. The NSG must let Azure's
infrastructure in, or the write is refused."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from emulator_helpers import eventually

from switchyard_emulator.addresses import loopback_alias
from switchyard_emulator.testing import EmulatorClients, SampleTopology, arm_error, free_port

PRIVATE_IP = "10.0.0.10"
OUTSIDER = "127.0.0.77"  # a loopback address the emulator does not hold: a client on the Internet
BLOCKED = "ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup"


def _get(source: str, host: str, port: int) -> tuple[int, str] | str:
    """GET /version from a client socket bound to `source`: (status, body), or "dropped" when the
    connection is closed without an HTTP answer, or "refused" when nothing listens there."""
    try:
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(f"GET /version HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "dropped"
    if not data:
        return "dropped"
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def _rule(name: str, priority: int, source: str, ports: str, *, access: str = "Allow", dest: str = "*") -> dict:
    return {
        "name": name,
        "properties": {
            "priority": priority,
            "direction": "Inbound",
            "access": access,
            "protocol": "Tcp",
            "sourceAddressPrefix": source,
            "sourcePortRange": "*",
            "destinationAddressPrefix": dest,
            "destinationPortRange": ports,
        },
    }


def _nsg(clients: EmulatorClients, topo: SampleTopology, name: str, rules: list[dict[str, Any]]) -> str:
    return str(
        clients.network.network_security_groups.begin_create_or_update(
            topo.rg, name, {"location": topo.location, "properties": {"securityRules": rules}}
        )
        .result()
        .id
    )


def _associate(clients: EmulatorClients, topo: SampleTopology, subnet: str, prefix: str, nsg_id: str | None) -> Any:
    properties: dict[str, Any] = {"addressPrefix": prefix}
    if nsg_id is not None:
        properties["networkSecurityGroup"] = {"id": nsg_id}
    return clients.network.subnets.begin_create_or_update(topo.rg, "vnet", subnet, {"properties": properties}).result()


def _private_gateway(topo: SampleTopology, production: int, test: int, **private: Any) -> dict[str, Any]:
    """Production listener on the public frontend, test listener on a private frontend."""
    body = topo.gateway_body(production, test_port=test)
    frontend = {
        "subnet": {"id": topo.subnet_id("gateway")},
        "privateIPAllocationMethod": "Static",
        "privateIPAddress": PRIVATE_IP,
        **private,
    }
    body["properties"]["frontendIPConfigurations"].append({"name": "private", "properties": frontend})
    test_listener = next(x for x in body["properties"]["httpListeners"] if x["name"] == "test")
    test_listener["properties"]["frontendIPConfiguration"]["id"] = (
        f"{topo.gateway_id()}/frontendIPConfigurations/private"
    )
    return body


@pytest.fixture
def deployed(
    clients: EmulatorClients, topo: SampleTopology, artifacts: dict[str, Path]
) -> tuple[SampleTopology, int, int]:
    """Blue (1.0.0) live behind the public production listener, green (2.0.0) idle behind the
    private test listener; the gateway subnet's NSG lets Azure's infrastructure in, the Internet to
    the production port, and only 127.0.0.1 (the runner) to the test port."""
    topo.network()
    topo.gallery()
    topo.publish("1.0.0", artifacts["1.0.0"])
    topo.publish("2.0.0", artifacts["2.0.0"])
    production, test = free_port(), free_port()
    nsg = _nsg(
        clients,
        topo,
        "agw-nsg",
        [
            _rule("AllowProductionFromInternet", 110, "Internet", str(production)),
            _rule("AllowTestFromRunner", 120, "127.0.0.1/32", str(test), dest="10.0.0.0/24"),
            _rule("AllowGatewayManager", 200, "GatewayManager", "65200-65535"),
        ],
    )
    _associate(clients, topo, "gateway", "10.0.0.0/24", nsg)
    clients.network.application_gateways.begin_create_or_update(
        topo.rg, "agw", _private_gateway(topo, production, test)
    ).result()
    scale_sets = clients.compute.virtual_machine_scale_sets
    blue = scale_sets.begin_create_or_update(
        topo.rg, "blue", topo.scale_set_body(topo.version_id("1.0.0"), 1, pool="blue")
    )
    green = scale_sets.begin_create_or_update(
        topo.rg, "green", topo.scale_set_body(topo.version_id("2.0.0"), 1, pool="green")
    )
    blue.result()
    green.result()
    return topo, production, test


def _version(answer: tuple[int, str] | str) -> str | None:
    if isinstance(answer, tuple) and answer[0] == 200:
        return answer[1].split('"app_version": "')[1].split('"')[0]
    return None


def test_the_private_test_listener_answers_only_allowed_sources(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int, int]
) -> None:
    topo, production, test = deployed
    alias = loopback_alias(PRIVATE_IP)
    assert alias == "127.0.0.10"
    frontend = next(
        f
        for f in clients.network.application_gateways.get(topo.rg, "agw").frontend_ip_configurations
        if f.name == "private"
    )
    assert (frontend.private_ip_address, frontend.private_ip_allocation_method) == (PRIVATE_IP, "Static")

    # the runner (127.0.0.1, allowed by rule 120) reaches the idle pool through the private frontend
    assert eventually(lambda: _version(_get("127.0.0.1", alias, test)) == "2.0.0")
    # another source is dropped: no HTTP answer at all (DenyAllInBound decides)
    assert _get(OUTSIDER, alias, test) == "dropped"
    # the public frontend does not listen on the test port
    assert _get("127.0.0.1", "127.0.0.1", test) == "refused"
    # production stays public: the Internet reaches the live pool
    assert eventually(lambda: _version(_get(OUTSIDER, "127.0.0.1", production)) == "1.0.0")
    # an instance's address is in the virtual network: AllowVnetInBound lets it in
    instance_ip = next(
        c.private_ip_address
        for nic in clients.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(topo.rg, "blue")
        for c in nic.ip_configurations
    )
    assert _version(_get(instance_ip, alias, test)) == "2.0.0"

    # a rule added later applies to new connections
    clients.network.security_rules.begin_create_or_update(
        topo.rg, "agw-nsg", "DenyRunner", _rule("DenyRunner", 115, "127.0.0.1", str(test), access="Deny")
    ).result()
    assert eventually(lambda: _get("127.0.0.1", alias, test) == "dropped")


def test_an_nsg_must_let_azure_infrastructure_into_a_gateway_subnet(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int, int]
) -> None:
    topo, production, _test = deployed
    nsgs = clients.network.network_security_groups
    rules = clients.network.security_rules

    # a rule that would block GatewayManager (whose addresses are on the Internet) before rule 200
    # lets it in: refused, not stored
    with pytest.raises(HttpResponseError) as refused:
        rules.begin_create_or_update(
            topo.rg, "agw-nsg", "NoManagement", _rule("NoManagement", 105, "Internet", "65000-65535", access="Deny")
        ).result()
    assert (refused.value.status_code, arm_error(refused.value).code) == (400, BLOCKED)
    assert "blocks incoming internet traffic on ports 65200 - 65535" in arm_error(refused.value).message
    assert [r.name for r in rules.list(topo.rg, "agw-nsg")] == [
        "AllowProductionFromInternet",
        "AllowTestFromRunner",
        "AllowGatewayManager",
    ]
    # nor may an allow rule go that the infrastructure needs
    with pytest.raises(HttpResponseError) as refused:
        rules.begin_delete(topo.rg, "agw-nsg", "AllowGatewayManager").result()
    assert arm_error(refused.value).code == BLOCKED

    # an NSG that only lets production traffic in (DenyAllInBound blocks GatewayManager) cannot be
    # associated with the gateway's subnet ...
    closed = _nsg(clients, topo, "closed", [_rule("AllowProduction", 100, "Internet", str(production))])
    with pytest.raises(HttpResponseError) as refused:
        _associate(clients, topo, "gateway", "10.0.0.0/24", closed)
    assert arm_error(refused.value).code == BLOCKED
    assert clients.network.subnets.get(topo.rg, "vnet", "gateway").network_security_group.id.endswith("/agw-nsg")
    # ... and a gateway cannot be written onto a subnet that has it
    _associate(clients, topo, "instances", "10.0.1.0/24", closed)  # no gateway there: allowed
    body = topo.gateway_body(free_port(), name="agw2")
    body["properties"]["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"] = topo.subnet_id("instances")
    with pytest.raises(HttpResponseError) as refused:
        clients.network.application_gateways.begin_create_or_update(topo.rg, "agw2", body).result()
    assert (refused.value.status_code, arm_error(refused.value).code) == (400, BLOCKED)
    assert "/subnets/instances" in arm_error(refused.value).message
    assert "agw2" not in [g.name for g in clients.network.application_gateways.list(topo.rg)]
    # an NSG a subnet uses cannot be deleted
    with pytest.raises(HttpResponseError) as refused:
        nsgs.begin_delete(topo.rg, "closed").result()
    assert arm_error(refused.value).code == "InUseNetworkSecurityGroupCannotBeDeleted"
    assert nsgs.get(topo.rg, "closed").subnets[0].id.endswith("/subnets/instances")


@pytest.mark.parametrize(
    ("private", "code", "field"),
    [
        (
            {"privateIPAllocationMethod": "Dynamic"},
            "ApplicationGatewayFrontendIpPrivateIpAddressInvalidAllocationType",
            "privateIPAllocationMethod",
        ),
        ({"privateIPAddress": "10.0.1.10"}, "PrivateIPAddressNotInSubnet", "privateIPAddress"),
        ({"privateIPAddress": "10.0.0.3"}, "PrivateIPAddressInReservedRange", "privateIPAddress"),
        ({"privateIPAddress": "10.0.0.255"}, "PrivateIPAddressInReservedRange", "privateIPAddress"),
        (
            {"subnet": {"id": "instances"}},
            "ApplicationGatewayFrontendIpSubnetCannotBeDifferentFromGatewaySubnet",
            "subnet.id",
        ),
    ],
)
def test_a_private_frontend_is_a_static_address_of_the_gateway_subnet(
    clients: EmulatorClients, topo: SampleTopology, private: dict[str, Any], code: str, field: str
) -> None:
    topo.network()
    if "subnet" in private:
        private = {"subnet": {"id": topo.subnet_id("instances")}}
    with pytest.raises(HttpResponseError) as refused:
        clients.network.application_gateways.begin_create_or_update(
            topo.rg, "agw", _private_gateway(topo, free_port(), free_port(), **private)
        ).result()
    assert (refused.value.status_code, arm_error(refused.value).code) == (400, code)
    assert arm_error(refused.value).target == f"properties.frontendIPConfigurations[1].properties.{field}"


def test_a_v2_gateway_has_one_public_frontend_and_at_most_one_private(
    clients: EmulatorClients, topo: SampleTopology
) -> None:
    topo.network()
    gateways = clients.network.application_gateways
    private_only = _private_gateway(topo, free_port(), free_port())
    del private_only["properties"]["frontendIPConfigurations"][0]
    private_only["properties"]["httpListeners"][0]["properties"]["frontendIPConfiguration"]["id"] = (
        f"{topo.gateway_id()}/frontendIPConfigurations/private"
    )
    with pytest.raises(HttpResponseError) as refused:
        gateways.begin_create_or_update(topo.rg, "agw", private_only).result()
    assert arm_error(refused.value).code == "ApplicationGatewayFeatureCannotBeEnabledForSelectedSku"

    two_private = _private_gateway(topo, free_port(), free_port())
    extra = {**two_private["properties"]["frontendIPConfigurations"][1], "name": "private2"}
    extra["properties"] = {**extra["properties"], "privateIPAddress": "10.0.0.11"}
    two_private["properties"]["frontendIPConfigurations"].append(extra)
    with pytest.raises(HttpResponseError) as refused:
        gateways.begin_create_or_update(topo.rg, "agw", two_private).result()
    assert arm_error(refused.value).code == "ApplicationGatewayFrontendIpConfigurationLimitReached"
    two_private["properties"]["frontendIPConfigurations"].pop(0)  # two private, no public
    with pytest.raises(HttpResponseError) as refused:
        gateways.begin_create_or_update(topo.rg, "agw", two_private).result()
    assert arm_error(refused.value).code == "ApplicationGatewayCannotHaveMoreThanOneIpV4FrontendIPConfiguration"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"priority": 99}, "SecurityRuleInvalidPriority", "priority"),
        ({"priority": 4097}, "SecurityRuleInvalidPriority", "priority"),
        ({"sourceAddressPrefix": "20.20.20.20/16"}, "SecurityRuleInvalidAddressPrefix", "sourceAddressPrefix"),
        ({"sourceAddressPrefix": "AzureBastionSubnet"}, "SecurityRuleInvalidAddressPrefix", "sourceAddressPrefix"),
        ({"destinationPortRange": "80,443"}, "SecurityRuleInvalidPortRange", "destinationPortRange"),
        ({"destinationPortRange": "90-80"}, "SecurityRuleInvalidPortRange", "destinationPortRange"),
    ],
)
def test_security_rules_are_validated_as_azure_does(
    clients: EmulatorClients, topo: SampleTopology, change: dict[str, Any], code: str, field: str
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": topo.location})
    rule = _rule("r", 100, "Internet", "80")
    rule["properties"].update(change)
    with pytest.raises(HttpResponseError) as refused:
        _nsg(clients, topo, "nsg", [rule])
    assert (refused.value.status_code, arm_error(refused.value).code) == (400, code)
    assert arm_error(refused.value).target == f"properties.securityRules[0].properties.{field}"
    assert list(clients.network.network_security_groups.list(topo.rg)) == []


def test_an_nsg_answers_azure_default_rules_and_refuses_two_rules_of_one_priority(
    clients: EmulatorClients, topo: SampleTopology
) -> None:
    clients.resource.resource_groups.create_or_update(topo.rg, {"location": topo.location})
    _nsg(clients, topo, "nsg", [_rule("web", 100, "Internet", "80")])
    nsg = clients.network.network_security_groups.get(topo.rg, "nsg")
    assert [(r.name, r.priority, r.access) for r in nsg.default_security_rules] == [
        ("AllowVnetInBound", 65000, "Allow"),
        ("AllowAzureLoadBalancerInBound", 65001, "Allow"),
        ("DenyAllInBound", 65500, "Deny"),
        ("AllowVnetOutBound", 65000, "Allow"),
        ("AllowInternetOutBound", 65001, "Allow"),
        ("DenyAllOutBound", 65500, "Deny"),
    ]
    with pytest.raises(HttpResponseError) as refused:
        clients.network.security_rules.begin_create_or_update(
            topo.rg, "nsg", "web2", _rule("web2", 100, "Internet", "8080")
        ).result()
    assert arm_error(refused.value).code == "SecurityRuleConflict"
    assert "Rules cannot have the same Priority and Direction" in arm_error(refused.value).message


def test_an_nsg_must_not_deny_azure_load_balancer_on_a_gateway_subnet(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int, int]
) -> None:
    topo, _production, _test = deployed
    rules = clients.network.security_rules
    deny_all = _rule("DenyAll", 4000, "*", "*", access="Deny")
    with pytest.raises(HttpResponseError) as refused:  # it would shadow AllowAzureLoadBalancerInBound (65001)
        rules.begin_create_or_update(topo.rg, "agw-nsg", "DenyAll", deny_all).result()
    assert (refused.value.status_code, arm_error(refused.value).code) == (400, BLOCKED)
    assert "AzureLoadBalancer" in arm_error(refused.value).message
    rules.begin_create_or_update(
        topo.rg, "agw-nsg", "AllowLoadBalancer", _rule("AllowLoadBalancer", 3000, "AzureLoadBalancer", "*")
    ).result()
    assert rules.begin_create_or_update(topo.rg, "agw-nsg", "DenyAll", deny_all).result().name == "DenyAll"


def test_public_and_private_listeners_on_one_port_make_the_frontend_ips_the_destination(
    clients: EmulatorClients, deployed: tuple[SampleTopology, int, int]
) -> None:
    topo, production, _test = deployed
    rules = clients.network.security_rules

    def allow_production(destination: str) -> None:
        rule = _rule("AllowProductionFromInternet", 110, "Internet", str(production), dest=destination)
        rules.begin_create_or_update(topo.rg, "agw-nsg", rule["name"], rule).result()

    # Azure's advice, the gateway subnet as destination, covers flows to the public frontend ...
    allow_production("10.0.0.0/24")
    assert eventually(lambda: _version(_get(OUTSIDER, "127.0.0.1", production)) == "1.0.0")

    # ... until a private listener shares the public one's port: then the destination of every
    # inbound flow is the frontend's own address (for the public frontend, its public IP's)
    body = _private_gateway(topo, production, free_port())
    props = body["properties"]
    props["frontendPorts"] = [p for p in props["frontendPorts"] if p["name"] == "production"]
    props["httpListeners"][1]["properties"]["frontendPort"]["id"] = f"{topo.gateway_id()}/frontendPorts/production"
    gateway = clients.network.application_gateways.begin_create_or_update(topo.rg, "agw", body).result()
    assert {(x.name, x.frontend_port.id.rsplit("/", 1)[1]) for x in gateway.http_listeners} == {
        ("production", "production"),
        ("test", "production"),
    }
    assert eventually(lambda: _get(OUTSIDER, "127.0.0.1", production) == "dropped")

    public_ip = clients.network.public_ip_addresses.get(topo.rg, "pip").ip_address
    allow_production(f"{public_ip}/32")
    assert eventually(lambda: _version(_get(OUTSIDER, "127.0.0.1", production)) == "1.0.0")
