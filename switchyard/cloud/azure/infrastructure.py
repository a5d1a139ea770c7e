"""The infrastructure port: what provisioning creates once per service and environment (resource
groups, network, public IP, gallery image definition, the gateway and autoscale settings)."""

from __future__ import annotations

from typing import Any

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.gallery import AzureGallery
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.router import AzureTrafficRouter
from switchyard.cloud.azure.wire import azure_errors
from switchyard.cloud.ports import Progress
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import GatewayObservation
from switchyard.core.topology import Color, Topology


class AzureInfrastructure:
    def __init__(
        self,
        clients: AzureClients,
        ids: AzureIds,
        environment: AzureEnvironment,
        gallery: AzureGallery,
        router: AzureTrafficRouter,
    ) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._gallery = gallery
        self._router = router

    def ensure_foundation(self, topology: Topology, service: ServiceConfig, progress: Progress) -> None:
        env = self._environment
        network = self._clients.network
        gateway_prefix, instance_prefix = env.subnet_prefixes()
        for group in dict.fromkeys([env.resource_group, env.gallery_group]):
            with azure_errors(f"resource group {group}"):
                progress(f"resource group {group}")
                self._clients.resources.resource_groups.create_or_update(
                    group, {"location": env.location, "tags": {"managedBy": "switchyard"}}
                )
        with azure_errors(f"virtual network {topology.virtual_network}"):
            progress(f"virtual network {topology.virtual_network} ({env.vnet_address_space})")
            network.virtual_networks.begin_create_or_update(
                env.resource_group,
                topology.virtual_network,
                {
                    "location": env.location,
                    "properties": {
                        "addressSpace": {"addressPrefixes": [env.vnet_address_space]},
                        "subnets": [
                            {
                                "name": topology.gateway_subnet,
                                "properties": {"addressPrefix": gateway_prefix},
                            },
                            {
                                "name": topology.instance_subnet,
                                "properties": {"addressPrefix": instance_prefix},
                            },
                        ],
                    },
                },
            ).result()
        with azure_errors(f"public IP {topology.public_ip}"):
            progress(f"public IP {topology.public_ip}")
            network.public_ip_addresses.begin_create_or_update(
                env.resource_group,
                topology.public_ip,
                {
                    "location": env.location,
                    "sku": {"name": "Standard", "tier": "Regional"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                },
            ).result()
        progress(f"gallery {env.gallery}, image definition {service.name}")
        self._gallery.ensure_image_definition(service.name, service.base)

    def _gateway_body(
        self,
        topology: Topology,
        service: ServiceConfig,
        live: Color,
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        ids = self._ids
        ports = service.ports_in(topology.environment)

        def ref(kind: str, name: str) -> dict[str, str]:
            return {"id": ids.gateway_child(topology, kind, name)}

        kept_addresses: dict[str, list[dict[str, Any]]] = {}
        if existing:
            for pool in existing.get("properties", {}).get("backendAddressPools", []):
                kept_addresses[pool["name"]] = pool.get("properties", {}).get("backendAddresses", [])
        body: dict[str, Any] = {
            "location": self._environment.location,
            "tags": (existing or {}).get("tags") or {"switchyard.service": service.name},
            "properties": {
                "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 2},
                "gatewayIPConfigurations": [
                    {
                        "name": topology.gateway_ip_configuration,
                        "properties": {"subnet": {"id": ids.subnet(topology, topology.gateway_subnet)}},
                    }
                ],
                "frontendIPConfigurations": [
                    {
                        "name": topology.frontend_ip,
                        "properties": {"publicIPAddress": {"id": ids.public_ip(topology)}},
                    }
                ],
                "frontendPorts": [
                    {"name": topology.production_port_name, "properties": {"port": ports.production}},
                    {"name": topology.test_port_name, "properties": {"port": ports.test}},
                ],
                "backendAddressPools": [
                    {
                        "name": topology.pool(color),
                        "properties": {"backendAddresses": kept_addresses.get(topology.pool(color), [])},
                    }
                    for color in Color
                ],
                "probes": [
                    {
                        "name": topology.probe,
                        "properties": {
                            "protocol": "Http",
                            "host": "127.0.0.1",
                            "path": service.health_path,
                            "interval": service.probe_interval_s,
                            "timeout": service.probe_timeout_s,
                            "unhealthyThreshold": service.probe_unhealthy_threshold,
                            "pickHostNameFromBackendHttpSettings": False,
                            "match": {"statusCodes": ["200-399"]},
                        },
                    }
                ],
                "backendHttpSettingsCollection": [
                    {
                        "name": topology.backend_settings,
                        "properties": {
                            "port": service.service_port,
                            "protocol": "Http",
                            "cookieBasedAffinity": "Disabled",
                            "requestTimeout": service.request_timeout_s,
                            "probe": ref("probes", topology.probe),
                            "connectionDraining": {
                                "enabled": True,
                                "drainTimeoutInSec": service.draining_timeout_s,
                            },
                        },
                    }
                ],
                "httpListeners": [
                    {
                        "name": listener,
                        "properties": {
                            "frontendIPConfiguration": ref("frontendIPConfigurations", topology.frontend_ip),
                            "frontendPort": ref("frontendPorts", port_name),
                            "protocol": "Http",
                        },
                    }
                    for listener, port_name in (
                        (topology.production_listener, topology.production_port_name),
                        (topology.test_listener, topology.test_port_name),
                    )
                ],
                "requestRoutingRules": [
                    {
                        "name": rule,
                        "properties": {
                            "ruleType": "Basic",
                            "priority": priority,
                            "httpListener": ref("httpListeners", listener),
                            "backendAddressPool": ref("backendAddressPools", topology.pool(color)),
                            "backendHttpSettings": ref("backendHttpSettingsCollection", topology.backend_settings),
                        },
                    }
                    for rule, listener, color, priority in (
                        (topology.production_rule, topology.production_listener, live, 100),
                        (topology.test_rule, topology.test_listener, live.other, 200),
                    )
                ],
            },
        }
        return body

    def ensure_gateway(self, topology: Topology, service: ServiceConfig, progress: Progress) -> GatewayObservation:
        existing = self._router.definition(topology)
        if existing is None:
            progress(f"gateway {topology.gateway}: creating (production -> blue, test -> green)")
            body = self._gateway_body(topology, service, Color.BLUE, None)
            self._router.write_full(topology, body, None)
        else:
            # Routing is the release's business: keep whichever color is live and any canary.
            observed = self._router.observe(topology, with_health=False)
            live = observed.live_color or Color.BLUE
            body = self._gateway_body(topology, service, live, existing)
            progress(f"gateway {topology.gateway}: updating in place (production stays on {live.value})")
            self._router.write_full(topology, body, existing.get("etag"))
        return self._router.observe(topology, with_health=False)

    def ensure_autoscale(self, topology: Topology, service: ServiceConfig, color: Color) -> None:
        env = self._environment
        scale = service.autoscale
        target = self._ids.scale_set(topology, color)

        def rule(operator: str, threshold: float, direction: str) -> dict[str, Any]:
            window = f"PT{scale.time_window_s}S"
            return {
                "metricTrigger": {
                    "metricName": "Percentage CPU",
                    "metricNamespace": "microsoft.compute/virtualmachinescalesets",
                    "metricResourceUri": target,
                    "timeGrain": "PT1M" if scale.time_window_s >= 60 else "PT1S",
                    "statistic": "Average",
                    "timeWindow": window,
                    "timeAggregation": "Average",
                    "operator": operator,
                    "threshold": threshold,
                },
                "scaleAction": {
                    "direction": direction,
                    "type": "ChangeCount",
                    "value": "1",
                    "cooldown": f"PT{scale.cooldown_s}S",
                },
            }

        body = {
            "location": env.location,
            "tags": {"switchyard.service": service.name, "switchyard.color": color.value},
            "properties": {
                "name": topology.autoscale_setting,
                "enabled": scale.enabled,
                "targetResourceUri": target,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {
                            "minimum": str(max(scale.minimum, 1)),
                            "maximum": str(max(scale.maximum, service.capacity)),
                            "default": str(service.capacity),
                        },
                        "rules": [
                            rule("GreaterThan", scale.scale_out_cpu_percent, "Increase"),
                            rule("LessThan", scale.scale_in_cpu_percent, "Decrease"),
                        ],
                    }
                ],
            },
        }
        with azure_errors(f"autoscale setting {topology.autoscale_setting}"):
            self._clients.monitor.autoscale_settings.create_or_update(
                env.resource_group, topology.autoscale_setting, body
            )
