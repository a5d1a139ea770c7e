"""The telemetry port on Azure Monitor: gateway and scale set metrics, and the gateway access log
in Log Analytics for latency percentiles."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from switchyard.cloud.azure.clients import AzureClients
from switchyard.cloud.azure.ids import AzureIds
from switchyard.cloud.azure.wire import azure_errors, wire
from switchyard.cloud.errors import CloudError
from switchyard.cloud.ports import RequestCounts
from switchyard.core.config import AzureEnvironment
from switchyard.core.topology import Color, Topology


class AzureMonitorTelemetry:
    def __init__(self, clients: AzureClients, ids: AzureIds, environment: AzureEnvironment, metrics_grain: str) -> None:
        self._clients = clients
        self._ids = ids
        self._environment = environment
        self._grain = metrics_grain

    @staticmethod
    def _timespan(start: datetime, end: datetime) -> str:
        return f"{start.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}/{end.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"

    def _series(
        self, resource_id: str, metric: str, aggregation: str, start: datetime, end: datetime, filter: str
    ) -> list[dict[str, Any]]:
        with azure_errors(f"metric {metric} of {resource_id.rsplit('/', 1)[-1]}"):
            response = wire(
                self._clients.monitor.metrics.list(
                    resource_id,
                    timespan=self._timespan(start, end),
                    interval=self._grain,
                    metricnames=metric,
                    aggregation=aggregation,
                    filter=filter,
                    # Azure returns 10 series by default; a split by backend and status has more.
                    top=1000,
                )
            )
        series: list[dict[str, Any]] = []
        for value in response.get("value", []):
            series.extend(value.get("timeseries", []))
        return series

    @staticmethod
    def _dimensions(element: dict[str, Any]) -> dict[str, str]:
        return {m["name"]["value"].lower(): m.get("value", "") for m in element.get("metadatavalues", [])}

    def requests_by_backend(self, topology: Topology, start: datetime, end: datetime) -> dict[str, RequestCounts]:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for element in self._series(
            self._ids.gateway(topology),
            "BackendResponseStatus",
            "Total",
            start,
            end,
            "BackendServer eq '*' and HttpStatusGroup eq '*'",
        ):
            dims = self._dimensions(element)
            server = dims.get("backendserver", "").rsplit(":", 1)[0]
            count = int(sum(point.get("total") or 0 for point in element.get("data", [])))
            totals[server][0] += count
            if dims.get("httpstatusgroup", "").startswith("5"):
                totals[server][1] += count
        return {server: RequestCounts(total=t, failed=f) for server, (t, f) in totals.items()}

    def latency_by_backend(
        self, topology: Topology, start: datetime, end: datetime, listener: str
    ) -> dict[str, list[float]]:
        workspace = self._clients.log_analytics_workspace_id
        if not workspace:
            raise CloudError(
                f"environment {self._environment.name} has no log_analytics_workspace_id: "
                "latency percentiles come from the gateway access log in Log Analytics"
            )
        gateway_id = self._ids.gateway(topology).upper()
        query = (
            "AzureDiagnostics"
            f' | where Category == "ApplicationGatewayAccessLog" and ResourceId == "{gateway_id}"'
            f' and listenerName_s == "{listener}"'
            f" and TimeGenerated >= datetime({start.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ})"
            f" and TimeGenerated < datetime({end.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ})"
            " | project serverRouted_s, timeTaken_d"
        )
        with azure_errors("querying the gateway access log"):
            result = self._clients.logs.query_workspace(workspace, query, timespan=(start, end))
        tables = getattr(result, "tables", None)
        if tables is None:
            raise CloudError(f"the access log query returned no tables: {getattr(result, 'partial_error', '')}")
        samples: dict[str, list[float]] = defaultdict(list)
        for table in tables:
            for row in table.rows:
                server, seconds = row[0], row[1]
                if server and seconds is not None:
                    samples[str(server).rsplit(":", 1)[0]].append(float(seconds) * 1000.0)
        return dict(samples)

    def cpu_percent(
        self,
        topology: Topology,
        color: Color,
        start: datetime,
        end: datetime,
        vm_names: list[str] | None = None,
    ) -> list[float]:
        wanted = {name.lower() for name in vm_names} if vm_names is not None else None
        samples: list[float] = []
        for element in self._series(
            self._ids.scale_set(topology, color), "Percentage CPU", "Average", start, end, "VMName eq '*'"
        ):
            if wanted is not None and self._dimensions(element).get("vmname", "").lower() not in wanted:
                continue
            samples.extend(p["average"] for p in element.get("data", []) if p.get("average") is not None)
        return samples
