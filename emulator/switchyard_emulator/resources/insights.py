"""Azure Monitor: metrics and metric definitions of gateways and scale sets (answered by the data
plane from real telemetry), autoscale settings (evaluated by the data plane), diagnostic settings
(diagnostics.py), and the Log Analytics query API that azure-monitor-query's LogsQueryClient calls
(`POST /v1/workspaces/{id}/query`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import azure.mgmt.monitor.models as mm
from starlette.requests import Request
from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import (
    Ctx,
    Route,
    check_preconditions,
    json_response,
    merge_patch,
    new_etag,
    page_response,
    read_body,
    require_resource_group,
    resource_response,
    route,
)
from switchyard_emulator.dataplane.errors import DataPlaneQueryError
from switchyard_emulator.dataplane.metric_definitions import namespace_metrics
from switchyard_emulator.dataplane.timespec import TimeSpecError, format_duration, parse_duration
from switchyard_emulator.errors import ArmError, bad_request
from switchyard_emulator.ids import key_of, parse_resource_id
from switchyard_emulator.profiles import AUTOSCALE_COOLDOWN_MAX_S, AUTOSCALE_GRAIN_MAX_S, AUTOSCALE_WINDOW_MAX_S
from switchyard_emulator.resources.base import ResourceKind, check_name, require_location, tags_of
from switchyard_emulator.resources.diagnostics import DiagnosticSettings
from switchyard_emulator.schema import msrest_schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

NS = "Microsoft.Insights"
AUTOSCALE_TYPE = "Microsoft.Insights/autoscaleSettings"
METRIC_TYPES = {
    "microsoft.network/applicationgateways": "Microsoft.Network/applicationGateways",
    "microsoft.compute/virtualmachinescalesets": "Microsoft.Compute/virtualMachineScaleSets",
}
AUTOSCALE_TARGETS = ("microsoft.compute/virtualmachinescalesets",)


class Insights:
    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.autoscale = ResourceKind(em, NS, "autoscalesettings")
        self.diagnostics = DiagnosticSettings(em)

    def routes(self) -> list[Route]:
        m = apiversions.METRICS
        a = apiversions.AUTOSCALE
        rg = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Insights/autoscalesettings"
        one = rg + "/{name}"
        return [
            *self.diagnostics.routes(),
            route(
                "GET",
                "{*uri}/providers/Microsoft.Insights/metrics",
                self.metrics,
                m,
                "Microsoft.Insights/metrics",
            ),
            route(
                "GET",
                "{*uri}/providers/Microsoft.Insights/metricDefinitions",
                self.metric_definitions,
                m,
                "Microsoft.Insights/metricDefinitions",
            ),
            route(
                "GET",
                "/subscriptions/{sub}/providers/Microsoft.Insights/autoscalesettings",
                self.list_autoscale_all,
                a,
                AUTOSCALE_TYPE,
            ),
            route("GET", rg, self.list_autoscale, a, AUTOSCALE_TYPE),
            route("GET", one, self.get_autoscale, a, AUTOSCALE_TYPE),
            route("PUT", one, self.put_autoscale, a, AUTOSCALE_TYPE),
            route("PATCH", one, self.patch_autoscale, a, AUTOSCALE_TYPE),
            route("DELETE", one, self.delete_autoscale, a, AUTOSCALE_TYPE),
        ]

    # -- metrics -----------------------------------------------------------------------------------

    def _metric_target(self, ctx: Ctx) -> StoredResource:
        uri = ctx.params["uri"]
        rid = parse_resource_id(uri, target="resourceUri")
        if rid.subscription.lower() != ctx.subscription.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{rid.subscription}' could not be found.")
        if rid.type_key not in METRIC_TYPES:
            raise bad_request(
                f"The emulator serves metrics of application gateways and scale sets, not '{rid.full_type}'.",
                target="resourceUri",
                code="ResourceTypeNotSupported",
            )
        resource = self.em.store.get(rid.key)
        if resource is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{rid.full_type}/{rid.name}' under resource group '{rid.resource_group}' was not found.",
            )
        return resource

    async def metrics(self, ctx: Ctx) -> Response:
        resource = self._metric_target(ctx)
        query = {k: v for k, v in ctx.raw_query if k.lower() != "api-version"}
        try:
            body = await self.em.dataplane.metrics(resource.id, resource.type_key, query)
        except DataPlaneQueryError as exc:
            return json_response(exc.status, exc.to_body())
        return json_response(200, body)

    async def metric_definitions(self, ctx: Ctx) -> Response:
        resource = self._metric_target(ctx)
        try:
            body = self.em.dataplane.metric_definitions(resource.id, resource.type_key)
        except DataPlaneQueryError as exc:
            return json_response(exc.status, exc.to_body())
        return json_response(200, body)

    # -- Log Analytics -----------------------------------------------------------------------------

    async def log_analytics(self, request: Request, segments: list[str]) -> Response:
        """POST /v1/workspaces/{workspaceId}/query with {"query", "timespan"} (azure-monitor-query)."""
        if len(segments) != 4 or segments[3].lower() != "query":
            return json_response(404, {"error": {"code": "PathNotFoundError", "message": "Unknown path."}})
        if request.method != "POST":
            return json_response(
                405, {"error": {"code": "MethodNotAllowed", "message": "Use POST for workspace queries."}}
            )
        workspace = segments[2]
        # the customer id of a workspace that exists (its resource may have been deleted with its group)
        workspace_resource = self.em.workspaces.by_customer_id(workspace)
        if workspace_resource is None:
            return json_response(
                404,
                {
                    "error": {
                        "code": "WorkspaceNotFoundError",
                        "message": f"Workspace {workspace} was not found.",
                    }
                },
            )
        try:
            body = json.loads(await read_body(request))
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return json_response(
                400,
                {
                    "error": {
                        "code": "BadArgumentError",
                        "message": "The request body needs a 'query' string.",
                    }
                },
            )
        timespan = body.get("timespan")
        # Only what diagnostic settings sent here exists in the workspace (diagnostics.py).
        collections = self.diagnostics.collections(workspace_resource.key)
        try:
            answer = await self.em.dataplane.query_logs(workspace, body["query"], timespan, collections)
        except DataPlaneQueryError as exc:
            return json_response(exc.status, exc.to_body())
        return json_response(200, answer)

    # -- autoscale settings ------------------------------------------------------------------------

    async def list_autoscale_all(self, ctx: Ctx) -> Response:
        items = self.em.store.of_type(self.autoscale.type_key, subscription=ctx.subscription)
        return page_response(ctx, [dict(r.body) for r in items])

    async def list_autoscale(self, ctx: Ctx) -> Response:
        require_resource_group(ctx, ctx.params["rg"])
        items = self.em.store.of_type(self.autoscale.type_key, rg_key=ctx.params["rg"])
        return page_response(ctx, [dict(r.body) for r in items])

    async def get_autoscale(self, ctx: Ctx) -> Response:
        existing = self.autoscale.get_or_404(ctx, ctx.params["name"])
        return resource_response(200, dict(existing.body), existing.etag)

    async def put_autoscale(self, ctx: Ctx) -> Response:
        body = validate(ctx.json_body(), msrest_schema(mm.AutoscaleSettingResource))
        return self._write(ctx, body)

    async def patch_autoscale(self, ctx: Ctx) -> Response:
        existing = self.autoscale.get_or_404(ctx, ctx.params["name"])
        patch = validate(ctx.json_body(), msrest_schema(mm.AutoscaleSettingResourcePatch), keep_nulls=True)
        base = {k: v for k, v in existing.body.items() if k in ("location", "tags", "properties")}
        merged = merge_patch(base, patch)
        return self._write(ctx, validate(merged, msrest_schema(mm.AutoscaleSettingResource)))

    def _write(self, ctx: Ctx, body: dict[str, Any]) -> Response:
        name = ctx.params["name"]
        check_name(name, "autoscale setting")
        setting_id, existing = self.autoscale.lookup(ctx, name)
        check_preconditions(ctx, existing)
        location = require_location(body, existing)
        props = dict(body["properties"])
        target = props.get("targetResourceUri")
        if not target:
            raise bad_request("targetResourceUri is required.", target="properties.targetResourceUri")
        if existing is not None:
            self._check_target_unchanged(ctx, existing, target)
        rid = parse_resource_id(target, target="properties.targetResourceUri")
        if rid.type_key not in AUTOSCALE_TARGETS or self.em.store.get(rid.key) is None:
            raise ArmError(
                400,
                "TargetResourceNotFound",
                f"The target resource {target} was not found (autoscale targets an existing scale set).",
                target="properties.targetResourceUri",
            )
        # "A maximum of 20 profiles can be specified." (AutoscaleSetting.profiles, maxItems 20, in
        # autoscale_API.json 2022-10-01)
        if len(props["profiles"]) > 20:
            raise bad_request("An autoscale setting has at most 20 profiles.", target="properties.profiles")
        for i, profile in enumerate(props["profiles"]):
            self._check_profile(profile, f"properties.profiles[{i}]")
        props.setdefault("enabled", True)
        props.setdefault("notifications", [])
        props.setdefault("predictiveAutoscalePolicy", {"scaleMode": "Disabled"})
        props["name"] = existing.body["name"] if existing else name
        stored = {
            "id": existing.id if existing else setting_id,
            "name": props["name"],
            "type": AUTOSCALE_TYPE,
            "location": location,
            **tags_of(body),
            "properties": props,
        }
        resource = StoredResource(
            key=key_of(stored["id"]),
            id=stored["id"],
            type_key=self.autoscale.type_key,
            rg_key=ctx.params["rg"].lower(),
            parent_key=None,
            body=stored,
            etag=new_etag(),
        )
        self.em.store.put(resource)
        return resource_response(200 if existing else 201, stored, resource.etag)

    @staticmethod
    def _check_target_unchanged(ctx: Ctx, existing: StoredResource, target: str) -> None:
        """An existing setting's target is immutable, even when that target has since been deleted
        (Azure does not delete a setting with its target: Azure/vm-scale-sets#4). Azure's answer,
        as users met it (Azure/Moodle#311, F5Networks/f5-azure-arm-templates#102): 400
        TargetResourceIdIsImmutable."""
        current = str(existing.body["properties"].get("targetResourceUri", ""))
        if key_of(current) == key_of(target):
            return
        raise ArmError(
            400,
            "TargetResourceIdIsImmutable",
            f"The autoscale setting '{existing.body['name']}' under resource group '{ctx.params['rg']}' is "
            f"referencing target resource '{current}'. The target resource reference is immutable. If you "
            "want to change it, please create a new autoscale setting with a different name.",
            target="properties.targetResourceUri",
        )

    def _check_duration(self, value: Any, where: str, minimum: float, maximum: float) -> None:
        """Autoscale's documented ranges (profiles.py): the minimum is the timing profile's (Azure's in
        the azure profile, second-scale in fast), the maximum always Azure's."""
        try:
            seconds = parse_duration(str(value))
        except TimeSpecError as exc:
            raise bad_request(f"{where} is not an ISO 8601 duration: {exc}", target=where) from None
        if not minimum <= seconds <= maximum:
            profile = (
                " (the emulator's fast profile allows second-scale minima)" if self.em.timing.name == "fast" else ""
            )
            raise bad_request(
                f"{where} is {value}: it must be between {format_duration(minimum)} and "
                f"{format_duration(maximum)}{profile}.",
                target=where,
            )

    def _check_profile(self, profile: dict[str, Any], target: str) -> None:
        capacity = profile["capacity"]
        values: dict[str, int] = {}
        for field in ("minimum", "maximum", "default"):
            try:
                values[field] = int(capacity[field])
            except ValueError:
                raise bad_request(
                    f"capacity.{field} must be an integer string, not '{capacity[field]}'.",
                    target=f"{target}.capacity.{field}",
                ) from None
            if values[field] < 0:
                raise bad_request(f"capacity.{field} must not be negative.", target=f"{target}.capacity.{field}")
        if not values["minimum"] <= values["default"] <= values["maximum"]:
            raise bad_request("The capacity must satisfy minimum <= default <= maximum.", target=f"{target}.capacity")
        if len(profile.get("rules", [])) > 10:
            raise bad_request("A profile has at most 10 rules.", target=f"{target}.rules")
        timing = self.em.timing
        for j, rule in enumerate(profile.get("rules", [])):
            at = f"{target}.rules[{j}]"
            trigger, action = rule["metricTrigger"], rule["scaleAction"]
            # Limits from the autoscale spec (specification/monitor/resource-manager/Microsoft.Insights/
            # stable/2022-10-01/autoscale_API.json): MetricTrigger.timeGrain "Must be between 12 hours
            # and 1 minute", timeWindow "Must be between 12 hours and 5 minutes", ScaleAction.cooldown
            # "must be between 1 week and 1 minute".
            self._check_duration(
                trigger["timeGrain"],
                f"{at}.metricTrigger.timeGrain",
                timing.autoscale_grain_min_s,
                AUTOSCALE_GRAIN_MAX_S,
            )
            self._check_duration(
                trigger["timeWindow"],
                f"{at}.metricTrigger.timeWindow",
                timing.autoscale_window_min_s,
                AUTOSCALE_WINDOW_MAX_S,
            )
            self._check_duration(
                action["cooldown"],
                f"{at}.scaleAction.cooldown",
                timing.autoscale_cooldown_min_s,
                AUTOSCALE_COOLDOWN_MAX_S,
            )
            uri = trigger["metricResourceUri"]
            where = f"{at}.metricTrigger.metricResourceUri"
            rid = parse_resource_id(uri, target=where)
            if self.em.store.get(rid.key) is None:
                raise ArmError(400, "TargetResourceNotFound", f"The metric resource {uri} was not found.", target=where)
            self._check_metric(trigger, uri, rid.type_key, f"{at}.metricTrigger.metricName")

    @staticmethod
    def _check_metric(trigger: dict[str, Any], uri: str, type_key: str, where: str) -> None:
        """A rule must name a metric its resource has. Azure refuses any other name with 400
        UnsupportedMetric, naming the resource, namespace and metric (as users met it:
        Azure/azure-cli#25986, "Percentage memory" on Azure/azure-cli#15329)."""
        name = str(trigger.get("metricName", ""))
        namespace = trigger.get("metricNamespace")
        known = METRIC_TYPES.get(type_key)
        metrics = namespace_metrics(known)[1] if known is not None else ()
        namespace_ok = not namespace or known is None or str(namespace).lower() == known.lower()
        if namespace_ok and any(metric.name.lower() == name.lower() for metric in metrics):
            return
        raise ArmError(
            400,
            "UnsupportedMetric",
            f"resource: {uri}, metricnamespace: {namespace or 'metricNamespace is null'}, metricname: {name}",
            target=where,
        )

    async def delete_autoscale(self, ctx: Ctx) -> Response:
        _, existing = self.autoscale.lookup(ctx, ctx.params["name"])
        if existing is None:
            return json_response(204, None)
        self.em.store.delete(existing.key)
        return json_response(200, None)
