"""The infrastructure port: what provisioning creates once per service and environment (resource
groups, the network and its security group, public IP, gallery image definition, the gateway with its
diagnostic setting, and one autoscale setting per color)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.core.rest import HttpRequest

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.gallery import AzureGallery
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.router import AzureTrafficRouter
from switchyard.cloud.azure.telemetry import AzureMonitorTelemetry
from switchyard.cloud.azure.wire import azure_errors, iso_duration
from switchyard.cloud.errors import CloudError
from switchyard.cloud.ports import Progress
from switchyard.core.config import AzureEnvironment, ServiceConfig
from switchyard.core.state import GatewayObservation
from switchyard.core.timing import AZURE_METRIC_GRAIN_S
from switchyard.core.topology import Color, Topology

# azure-mgmt-monitor 7 has no diagnostic-settings operations; this is the api-version its REST spec
# (Microsoft.Insights/preview/2021-05-01-preview/diagnosticsSettings_API.json) and the emulator serve.
DIAGNOSTIC_SETTINGS_API_VERSION = "2021-05-01-preview"
ACCESS_LOG_CATEGORY = "ApplicationGatewayAccessLog"


class AzureInfrastructure:
    def __init__(
        self,
        clients: AzureClients,
        ids: AzureIds,
        environment: AzureEnvironment,
        gallery: AzureGallery,
        router: AzureTrafficRouter,
        telemetry: AzureMonitorTelemetry,
    ) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._gallery = gallery
        self._router = router
        self._telemetry = telemetry

    # -- foundation --------------------------------------------------------------------------------

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
        # The NSG first: the VNet write names it on the gateway subnet, and Azure checks it then.
        with azure_errors(f"network security group {topology.network_security_group}"):
            progress(f"network security group {topology.network_security_group}")
            network.network_security_groups.begin_create_or_update(
                env.resource_group,
                topology.network_security_group,
                {"location": env.location, "properties": {"securityRules": self._security_rules(topology, service)}},
            ).result()
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
                                "properties": {
                                    "addressPrefix": gateway_prefix,
                                    "networkSecurityGroup": {"id": self._ids.network_security_group(topology)},
                                },
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

    def _security_rules(self, topology: Topology, service: ServiceConfig) -> list[dict[str, Any]]:
        """Inbound rules of the gateway subnet's NSG.

        A v2 gateway's subnet must let in TCP 65200-65535 from the GatewayManager service tag and
        traffic from AzureLoadBalancer, to destination Any, or Azure refuses the gateway (and the NSG)
        with ApplicationGatewaySubnetInboundTrafficBlockedByNetworkSecurityGroup
        (learn.microsoft.com application-gateway/configuration-infrastructure, "Required security
        rules"; emulator/README.md "What the emulator enforces"). The listeners' rules name the subnet's
        prefix as destination, as that page does while public and private listeners use different
        ports. Users reach production from the Internet; the test listener (on the private frontend)
        only from the virtual network (Azure's default AllowVnetInBound) and test_source_prefixes:
        everything else meets the default DenyAllInBound."""
        gateway_prefix = self._environment.subnet_prefixes()[0]
        ports = service.ports_in(topology.environment)

        def allow(
            name: str, priority: int, protocol: str, sources: list[str], destination: str, port: str
        ) -> dict[str, Any]:
            source = {"sourceAddressPrefix": sources[0]} if len(sources) == 1 else {"sourceAddressPrefixes": sources}
            return {
                "name": name,
                "properties": {
                    "priority": priority,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": protocol,
                    **source,
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": destination,
                    "destinationPortRange": port,
                },
            }

        rules = [
            allow("AllowGatewayManager", 100, "Tcp", ["GatewayManager"], "*", "65200-65535"),
            allow("AllowAzureLoadBalancer", 110, "*", ["AzureLoadBalancer"], "*", "*"),
            allow("AllowProductionFromInternet", 200, "Tcp", ["Internet"], gateway_prefix, str(ports.production)),
        ]
        if self._environment.test_source_prefixes:
            rules.append(
                allow(
                    "AllowTestFromTestSources",
                    210,
                    "Tcp",
                    list(self._environment.test_source_prefixes),
                    gateway_prefix,
                    str(ports.test),
                )
            )
        return rules

    # -- gateway -----------------------------------------------------------------------------------

    def _gateway_body(
        self,
        topology: Topology,
        service: ServiceConfig,
        production_pool: str,
        test_pool: str,
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        ids = self._ids
        ports = service.ports_in(topology.environment)

        def ref(kind: str, name: str) -> dict[str, str]:
            return {"id": ids.gateway_child(topology, kind, name)}

        return {
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
                # One public frontend (production) and one private (test): a v2 gateway allows one
                # of each (learn.microsoft.com application-gateway/configuration-frontend-ip). The
                # private one is a static address of the gateway's own subnet.
                "frontendIPConfigurations": [
                    {
                        "name": topology.frontend_ip,
                        "properties": {"publicIPAddress": {"id": ids.public_ip(topology)}},
                    },
                    {
                        "name": topology.private_frontend_ip,
                        "properties": {
                            "subnet": {"id": ids.subnet(topology, topology.gateway_subnet)},
                            "privateIPAllocationMethod": "Static",
                            "privateIPAddress": self._environment.test_frontend_address(),
                        },
                    },
                ],
                "frontendPorts": [
                    {"name": topology.production_port_name, "properties": {"port": ports.production}},
                    {"name": topology.test_port_name, "properties": {"port": ports.test}},
                ],
                # NIC members only: a pool cannot hold NIC IP configurations and addresses at once
                # (Azure/azure-cli#3491), and NICs join from the scale-set model. So no backendAddresses
                # are written, and any an older switchyard left are dropped here.
                "backendAddressPools": [{"name": pool} for pool in Topology.pools()],
                "probes": [
                    {
                        "name": topology.probe,
                        "properties": {
                            "protocol": "Http",
                            # A custom probe needs a host unless it picks the settings' (Azure's
                            # ApplicationGatewayProbeHostIsNull).
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
                            "frontendIPConfiguration": ref("frontendIPConfigurations", frontend),
                            "frontendPort": ref("frontendPorts", port_name),
                            "protocol": "Http",
                        },
                    }
                    for listener, frontend, port_name in (
                        (topology.production_listener, topology.frontend_ip, topology.production_port_name),
                        (topology.test_listener, topology.private_frontend_ip, topology.test_port_name),
                    )
                ],
                "requestRoutingRules": [
                    {
                        "name": rule,
                        "properties": {
                            "ruleType": "Basic",
                            "priority": priority,
                            "httpListener": ref("httpListeners", listener),
                            "backendAddressPool": ref("backendAddressPools", pool),
                            "backendHttpSettings": ref("backendHttpSettingsCollection", topology.backend_settings),
                        },
                    }
                    for rule, listener, pool, priority in (
                        (topology.production_rule, topology.production_listener, production_pool, 100),
                        (topology.test_rule, topology.test_listener, test_pool, 200),
                    )
                ],
            },
        }

    def ensure_gateway(self, topology: Topology, service: ServiceConfig, progress: Progress) -> GatewayObservation:
        workspace = self._clients.log_analytics_workspace_resource_id
        if not workspace:
            # Checked before any write: without the access log a release cannot judge latency.
            raise CloudError(
                f"environment {self._environment.name} has no log_analytics_workspace_resource_id: the "
                "gateway's access log goes to that Log Analytics workspace (its ARM id, /subscriptions/.../"
                "providers/Microsoft.OperationalInsights/workspaces/NAME); with the emulator, restart it so "
                "that its emulator.json names the workspace"
            )
        existing = self._router.definition(topology)
        if existing is None:
            production = Topology.pool(Color.BLUE)
            test = Topology.pool(Color.GREEN)
            progress(f"gateway {topology.gateway}: creating (production -> {production}, test -> {test})")
            body = self._gateway_body(topology, service, production, test, None)
            self._router.write_full(topology, body, None)
        else:
            # Routing is the release's business: production keeps its pool (the live color's own, or
            # its canary pool while a canary serves); test goes to the other color's own pool.
            routed = (self._router.routed_pool(existing, topology.production_rule) or "").lower()
            live = Topology.color_of_pool(routed) or Color.BLUE
            production = routed if routed in Topology.pools() else Topology.pool(live)
            test = Topology.pool(live.other)
            body = self._gateway_body(topology, service, production, test, existing)
            progress(f"gateway {topology.gateway}: updating in place (production stays on {production})")
            self._router.write_full(topology, body, existing.get("etag"))
        self._ensure_access_log(topology, workspace, progress)
        return self._router.observe(topology, with_health=False)

    def _ensure_access_log(self, topology: Topology, workspace: str, progress: Progress) -> None:
        """A diagnostic setting that sends the access log to the workspace: resource logs are not
        collected until a setting routes them (learn.microsoft.com azure-monitor/essentials/
        diagnostic-settings). No destination type: records go to AzureDiagnostics, the table
        access_log reads."""
        setting = topology.diagnostic_setting
        progress(f"gateway {topology.gateway}: diagnostic setting {setting} (access log -> Log Analytics)")
        request = HttpRequest(
            "PUT",
            f"{self._ids.gateway(topology)}/providers/Microsoft.Insights/diagnosticSettings/{setting}",
            params={"api-version": DIAGNOSTIC_SETTINGS_API_VERSION},
            json={
                "properties": {
                    "workspaceId": workspace,
                    "logs": [{"category": ACCESS_LOG_CATEGORY, "enabled": True}],
                }
            },
        )
        with azure_errors(f"diagnostic setting {setting} of {topology.gateway}"):
            # The SDK's pipeline (auth, retries, TLS as for every call); the monitor client names it
            # _send_request.
            self._clients.monitor._send_request(request).raise_for_status()

    # -- autoscale ---------------------------------------------------------------------------------

    def ensure_autoscale(self, topology: Topology, service: ServiceConfig, live: Color) -> None:
        """One setting per color, each always targeting its own color's scale set: Azure never lets a
        setting's target change (TargetResourceIdIsImmutable; Azure/Moodle#311). A release flips which
        one is enabled."""
        env = self._environment
        settings = self._clients.monitor.autoscale_settings
        timing = self._telemetry.timing(topology)
        # Autoscale's grain: at least a minute where metrics come in minutes (Azure's minimum, the
        # autoscale spec's MetricTrigger.timeGrain), the cloud's own grain where they are finer.
        grain_s = max(AZURE_METRIC_GRAIN_S, timing.grain_s) if timing.in_minutes else timing.grain_s
        for color in Color:
            name = topology.autoscale_setting(color)
            target = self._ids.scale_set(topology, color)
            if not self._scale_set_exists(topology, color):
                continue
            with azure_errors(f"autoscale setting {name}"):
                try:
                    current = settings.get(env.resource_group, name)
                except ResourceNotFoundError:
                    current = None
                if current is not None and (current.target_resource_uri or "").lower() != target.lower():
                    # Never expected (the name says the color); the only way to a new target.
                    settings.delete(env.resource_group, name)
                settings.create_or_update(
                    env.resource_group,
                    name,
                    self._autoscale_body(topology, service, color, enabled=color is live, grain_s=grain_s),
                )
        with azure_errors(f"autoscale setting {topology.legacy_autoscale_setting}"):
            try:
                settings.get(env.resource_group, topology.legacy_autoscale_setting)
            except ResourceNotFoundError:
                return
            settings.delete(env.resource_group, topology.legacy_autoscale_setting)

    def _scale_set_exists(self, topology: Topology, color: Color) -> bool:
        with azure_errors(f"scale set {topology.scale_set(color)}"):
            try:
                self._clients.compute.virtual_machine_scale_sets.get(
                    self._environment.resource_group, topology.scale_set(color)
                )
            except ResourceNotFoundError:
                return False
        return True

    def _autoscale_body(
        self, topology: Topology, service: ServiceConfig, color: Color, *, enabled: bool, grain_s: float
    ) -> dict[str, Any]:
        scale = service.autoscale
        target = self._ids.scale_set(topology, color)

        def rule(metric: str, operator: str, threshold: float, direction: str) -> dict[str, Any]:
            return {
                "metricTrigger": {
                    "metricName": metric,
                    "metricNamespace": "microsoft.compute/virtualmachinescalesets",
                    "metricResourceUri": target,
                    "timeGrain": iso_duration(grain_s),
                    "statistic": "Average",
                    "timeWindow": iso_duration(scale.time_window_s),
                    "timeAggregation": "Average",
                    "operator": operator,
                    "threshold": threshold,
                },
                "scaleAction": {
                    "direction": direction,
                    "type": "ChangeCount",
                    "value": "1",
                    "cooldown": iso_duration(scale.cooldown_s),
                },
            }

        return {
            "location": self._environment.location,
            "tags": {"switchyard.service": service.name, "switchyard.color": color.value},
            "properties": {
                "name": topology.autoscale_setting(color),
                # The idle color's setting is kept, disabled: never evaluated (AutoscaleSetting.enabled).
                "enabled": enabled and scale.enabled,
                "targetResourceUri": target,
                "profiles": [
                    {
                        "name": "default",
                        "capacity": {
                            "minimum": str(max(scale.minimum, 1)),
                            "maximum": str(max(scale.maximum, service.capacity)),
                            "default": str(service.capacity),
                        },
                        # Which metric scales is a matter of the rules: changing it updates
                        # this setting in place, its target (immutable on Azure) stays.
                        "rules": [rule(r.metric, r.operator, r.threshold, r.direction) for r in scale.rules()],
                    }
                ],
            },
        }
