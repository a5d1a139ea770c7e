"""The telemetry port on Azure Monitor: gateway and scale set metrics at the cloud's own finest grain,
and the gateway access log in Log Analytics for latency percentiles.

Every query reads whole grains: its window is widened to grain boundaries (Azure buckets a metric by
grain anyway, and the access-log query covers the same span), so counts and latencies of one window
describe the same requests on Azure (PT1M) and on the emulator's fast profile (PT1S)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.wire import azure_errors, iso_duration, wire
from switchyard.cloud.errors import CloudError
from switchyard.cloud.ports import InstanceMetrics, RequestCounts
from switchyard.core.analysis import AccessLogEntry
from switchyard.core.config import AzureEnvironment
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color, Topology

# The gateway metrics switchyard reads; their definitions say which grains the cloud offers.
_GRAIN_METRICS = ("BackendResponseStatus", "TotalRequests")
# The scale set host metrics of the saturation signals.
_CPU = "Percentage CPU"
_AVAILABLE_MEMORY = "Available Memory Bytes"
_NETWORK_OUT = "Network Out Total"


def _instant(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"


def _logged_at(value: object) -> datetime:
    """A TimeGenerated cell: azure-monitor-query turns a datetime column into a datetime (UTC); a
    string is its ISO form (the table said string)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CloudError(f"the access log query returned a TimeGenerated that is no date-time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class AzureMonitorTelemetry:
    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._timings: dict[str, MetricTiming] = {}
        self._memory_by_size: dict[str, float] = {}  # VM sizes do not change their memory

    def timing(self, topology: Topology) -> MetricTiming:
        """From the gateway's metric definitions: each lists the grains a query may ask for
        (metricAvailabilities); the finest is PT1M on Azure ("supported metrics" table of
        Microsoft.Network/applicationGateways). A cloud's grains do not change, so it is read once."""
        gateway_id = self._ids.gateway(topology)
        known = self._timings.get(gateway_id.lower())
        if known is not None:
            return known
        with azure_errors(f"metric definitions of gateway {topology.gateway}"):
            definitions = list(self._clients.monitor.metric_definitions.list(gateway_id))
        grains = [
            availability.time_grain.total_seconds()
            for definition in definitions
            if definition.name is not None and definition.name.value in _GRAIN_METRICS
            for availability in definition.metric_availabilities or []
            if availability.time_grain is not None
        ]
        if not grains:
            raise CloudError(
                f"the metric definitions of gateway {topology.gateway} list no time grain for "
                f"{' or '.join(_GRAIN_METRICS)}: cannot tell how fine its metrics are"
            )
        timing = self._timings[gateway_id.lower()] = MetricTiming.for_grain(min(grains))
        return timing

    def _window(self, topology: Topology, start: datetime, end: datetime) -> tuple[MetricTiming, datetime, datetime]:
        """The whole grains that cover [start, end)."""
        timing = self.timing(topology)
        return timing, timing.grain_start(start), timing.next_grain(end)

    def _series(
        self,
        topology: Topology,
        resource_id: str,
        metrics: tuple[str, ...],
        aggregation: str,
        start: datetime,
        end: datetime,
        filter: str,
    ) -> dict[str, list[dict[str, Any]]]:
        """The time series of each of `metrics`, from one query: Metrics - List takes "the names of
        the metrics (comma separated) to retrieve. Limit 20 metrics" (Azure Monitor REST reference),
        with one aggregation and filter for all, and answers one value per metric. One read instead
        of several counts against ARM's read budget (switchyard reads telemetry every few seconds)."""
        timing, start, end = self._window(topology, start, end)
        names = ",".join(metrics)
        with azure_errors(f"metric {names} of {resource_id.rsplit('/', 1)[-1]}"):
            response = wire(
                self._clients.monitor.metrics.list(
                    resource_id,
                    timespan=f"{_instant(start)}/{_instant(end)}",
                    # The cloud's own finest grain: Azure refuses a grain its metrics do not have
                    # ("Invalid time grain duration").
                    interval=iso_duration(timing.grain_s),
                    metricnames=names,
                    aggregation=aggregation,
                    filter=filter,
                    # Azure returns 10 series by default; a split by backend and status has more.
                    top=1000,
                )
            )
        series: dict[str, list[dict[str, Any]]] = {metric: [] for metric in metrics}
        by_lower = {metric.lower(): metric for metric in metrics}
        for value in response.get("value", []):
            name = str((value.get("name") or {}).get("value", ""))
            metric = by_lower.get(name.lower())
            if metric is None:
                raise CloudError(f"Azure Monitor answered metric {name!r}, which was not asked for ({names})")
            series[metric].extend(value.get("timeseries", []))
        return series

    @staticmethod
    def _dimensions(element: dict[str, Any]) -> dict[str, str]:
        return {m["name"]["value"].lower(): m.get("value", "") for m in element.get("metadatavalues", [])}

    @staticmethod
    def _total(element: dict[str, Any]) -> int:
        return int(sum(point.get("total") or 0 for point in element.get("data", [])))

    def requests_by_backend(
        self, topology: Topology, start: datetime, end: datetime, pool: str
    ) -> dict[str, RequestCounts]:
        """BackendResponseStatus counts only what backends answered ("does not include any response
        codes generated by the Application Gateway", supported-metrics reference), filtered to one
        pool and split by server and status group together."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for element in self._series(
            topology,
            self._ids.gateway(topology),
            ("BackendResponseStatus",),
            "Total",
            start,
            end,
            f"BackendPool eq '{pool}' and BackendServer eq '*' and HttpStatusGroup eq '*'",
        )["BackendResponseStatus"]:
            dims = self._dimensions(element)
            if dims.get("backendpool", pool).lower() != pool.lower():
                continue
            server = dims.get("backendserver", "").rsplit(":", 1)[0]
            count = self._total(element)
            totals[server][0] += count
            if dims.get("httpstatusgroup", "").startswith("5"):
                totals[server][1] += count
        return {server: RequestCounts(total=t, failed=f) for server, (t, f) in totals.items()}

    def pool_requests(self, topology: Topology, start: datetime, end: datetime, pool: str) -> RequestCounts:
        """TotalRequests and FailedRequests of the pool with the service's backend settings: the
        BackendSettingsPool dimension's values are "<pool>~<backend settings>" (the emulator's metrics,
        as Azure's portal shows them). FailedRequests "includes the 5xx codes that are generated from
        the Application Gateway as well as ... from the backend" (application-gateway-metrics)."""
        settings_pool = f"{pool}~{topology.backend_settings}"
        series = self._series(
            topology,
            self._ids.gateway(topology),
            ("TotalRequests", "FailedRequests"),
            "Total",
            start,
            end,
            f"BackendSettingsPool eq '{settings_pool}'",
        )
        counts = {
            metric: sum(
                self._total(element)
                for element in elements
                if self._dimensions(element).get("backendsettingspool", settings_pool).lower() == settings_pool.lower()
            )
            for metric, elements in series.items()
        }
        return RequestCounts(total=counts["TotalRequests"], failed=counts["FailedRequests"])

    def access_log(
        self, topology: Topology, start: datetime, end: datetime, listener: str, pool: str
    ) -> list[AccessLogEntry]:
        """The access log reaches the workspace only through the gateway's diagnostic setting
        (provisioning writes it), into AzureDiagnostics; timeTaken_d is in seconds."""
        workspace = self._clients.log_analytics_workspace_id
        if not workspace:
            raise CloudError(
                f"environment {self._environment.name} has no log_analytics_workspace_id: "
                "latency percentiles come from the gateway access log in Log Analytics"
            )
        _timing, start, end = self._window(topology, start, end)
        query = (
            "AzureDiagnostics"
            f' | where Category == "ApplicationGatewayAccessLog" and ResourceId =~ "{self._ids.gateway(topology)}"'
            f' and listenerName_s =~ "{listener}" and backendPoolName_s =~ "{pool}"'
            f" and TimeGenerated >= datetime({_instant(start)}) and TimeGenerated < datetime({_instant(end)})"
            " | project TimeGenerated, serverRouted_s, timeTaken_d"
        )
        with azure_errors("querying the gateway access log"):
            result = self._clients.logs.query_workspace(workspace, query, timespan=(start, end))
        tables = getattr(result, "tables", None)
        if tables is None:
            raise CloudError(f"the access log query returned no tables: {getattr(result, 'partial_error', '')}")
        entries: list[AccessLogEntry] = []
        for table in tables:
            for row in table.rows:
                logged, server, seconds = row[0], row[1], row[2]
                if server and seconds is not None and logged is not None:
                    entries.append(
                        AccessLogEntry(
                            at=_logged_at(logged),
                            backend=str(server).rsplit(":", 1)[0],
                            latency_ms=float(seconds) * 1000.0,
                        )
                    )
        return entries

    def instance_metrics(
        self, topology: Topology, color: Color, start: datetime, end: datetime, vm_size: str | None
    ) -> dict[str, InstanceMetrics]:
        """The three host metrics of the scale set in one query, split per VMName at the same grains as
        every other query: Percentage CPU and Available Memory Bytes by their Average, Network Out
        Total by its Total (the aggregation list applies to every metric asked for)."""
        series = self._series(
            topology,
            self._ids.scale_set(topology, color),
            (_CPU, _AVAILABLE_MEMORY, _NETWORK_OUT),
            "Average,Total",
            start,
            end,
            "VMName eq '*'",
        )
        cpu = self._points_by_vm(series[_CPU], "average")
        available = self._points_by_vm(series[_AVAILABLE_MEMORY], "average")
        sent = {vm: sum(totals) for vm, totals in self._points_by_vm(series[_NETWORK_OUT], "total").items() if totals}
        memory = self._vm_memory_bytes(topology.scale_set(color), vm_size) if available else 0.0
        return {
            vm: InstanceMetrics(
                cpu_percent=cpu.get(vm, []),
                memory_used_percent=[
                    min(100.0, max(0.0, 100.0 * (1.0 - free / memory))) for free in available.get(vm, [])
                ],
                network_out_bytes=sent.get(vm),
            )
            for vm in sorted({*cpu, *available, *sent})
        }

    @classmethod
    def _points_by_vm(cls, elements: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
        """Each VM's values of one aggregation (`key`), grain by grain, from series split per VMName."""
        points: dict[str, list[float]] = defaultdict(list)
        for element in elements:
            vm = cls._dimensions(element).get("vmname", "")
            if vm:  # (not the unsplit series Azure answers when no VM has data)
                points[vm].extend(float(p[key]) for p in element.get("data", []) if p.get(key) is not None)
        return points

    def _vm_memory_bytes(self, scale_set: str, size: str | None) -> float:
        """The memory of VM size `size` (scale set `scale_set`'s), from the region's resource SKUs,
        listed once per size: the caller observed the size with the scale set, so a look at the
        metrics reads nothing else."""
        if not size:
            raise CloudError(f"scale set {scale_set} has no VM size: cannot tell its memory")
        known = self._memory_by_size.get(size.lower())
        if known is not None:
            return known
        location = self._environment.location
        with azure_errors(f"resource SKUs in {location}"):
            skus = list(self._clients.compute.resource_skus.list(filter=f"location eq '{location}'"))
        for sku in skus:
            if sku.resource_type != "virtualMachines" or (sku.name or "").lower() != size.lower():
                continue
            for capability in sku.capabilities or []:
                if capability.name == "MemoryGB" and capability.value:
                    memory = self._memory_by_size[size.lower()] = float(capability.value) * 2**30
                    return memory
        raise CloudError(f"the resource SKUs of {location} do not say how much memory {size} has (MemoryGB)")
