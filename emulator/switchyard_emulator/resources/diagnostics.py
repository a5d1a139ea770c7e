"""Diagnostic settings (Microsoft.Insights/diagnosticSettings, api-version 2021-05-01-preview): what
decides which resource logs reach the emulator's Log Analytics workspace.

Served where Azure serves them (specification/monitor/resource-manager/Microsoft.Insights/preview/
2021-05-01-preview/diagnosticsSettings_API.json): PUT/GET/DELETE
`{resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}` and GET (list)
`{resourceUri}/providers/Microsoft.Insights/diagnosticSettings`. azure-mgmt-monitor 7 has no
operations for them; clients send these requests through the SDK pipeline (`send_request`).

"Resource logs aren't collected until they're routed to a destination"
(https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings): a gateway's access
log reaches the workspace only while a setting sends the ApplicationGatewayAccessLog category there,
into AzureDiagnostics (no destination type) or the resource-specific AGWAccessLogs table
("Dedicated"). Every change of a setting is recorded as a collection span (start, end, table), so a
query sees exactly what was collected, including what a since-deleted setting collected.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from switchyard_emulator import apiversions
from switchyard_emulator.common import Ctx, Route, json_response, route
from switchyard_emulator.dataplane.api import LogCollection, LogTable
from switchyard_emulator.errors import ArmError, unsupported
from switchyard_emulator.ids import key_of, parse_resource_id
from switchyard_emulator.resources.base import check_name
from switchyard_emulator.schema import Field, Schema, validate
from switchyard_emulator.store import StoredResource

if TYPE_CHECKING:
    from switchyard_emulator.app import Emulator

TYPE = "Microsoft.Insights/diagnosticSettings"
TYPE_KEY = TYPE.lower()
ACCESS_LOG = "ApplicationGatewayAccessLog"
_PERIODS_META = "diagnostics:collection-periods"

# "Each resource can have up to five diagnostic settings."
# (https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings; a hard limit per
# https://learn.microsoft.com/azure/azure-monitor/fundamentals/service-limits)
MAX_SETTINGS_PER_RESOURCE = 5


@dataclass(frozen=True)
class _Categories:
    logs: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]  # category group (lower) -> the log categories it holds
    metrics: tuple[str, ...]


# Log categories per resource type: "Supported logs for Microsoft.Network/applicationgateways"
# (https://learn.microsoft.com/azure/azure-monitor/reference/supported-logs/
# microsoft-network-applicationgateways-logs): ApplicationGatewayAccessLog, ...FirewallLog,
# ...PerformanceLog. Category groups: allLogs (every category) and audit; which categories Azure puts
# into `audit` for gateways is not documented there, so the emulator gives it none (a client relying
# on `audit` for the access log gets no rows). Metrics: the only exportable metric category is
# AllMetrics ("Metric category 'Gateway Requests' is not supported, supported categories are:
# 'AllMetrics'", Azure's 400 quoted in TaoYang-Cloud/azurepolicy#19).
_GATEWAY_LOGS = (ACCESS_LOG, "ApplicationGatewayPerformanceLog", "ApplicationGatewayFirewallLog")
CATEGORIES: dict[str, _Categories] = {
    "microsoft.network/applicationgateways": _Categories(
        logs=_GATEWAY_LOGS, groups={"alllogs": _GATEWAY_LOGS, "audit": ()}, metrics=("AllMetrics",)
    ),
    # scale sets export platform metrics only (no resource log categories)
    "microsoft.compute/virtualmachinescalesets": _Categories(logs=(), groups={}, metrics=("AllMetrics",)),
}
_GROUP_NAMES = {"alllogs": "allLogs", "audit": "audit"}


def _obj(name: str, fields: dict[str, Field]) -> Schema:
    return Schema(kind="object", name=name, _fields={k.lower(): v for k, v in fields.items()})


def _str() -> Schema:
    return Schema(kind="str", name="String")


_RETENTION = _obj(
    "RetentionPolicy",
    {
        "enabled": Field("enabled", Schema(kind="bool", name="Boolean"), required=True),
        "days": Field("days", Schema(kind="int", name="Int32"), required=True),
    },
)
_LOG_SETTINGS = _obj(
    "LogSettings",
    {
        "category": Field("category", _str()),
        "categoryGroup": Field("categoryGroup", _str()),
        "enabled": Field("enabled", Schema(kind="bool", name="Boolean"), required=True),
        "retentionPolicy": Field("retentionPolicy", _RETENTION),
    },
)
_METRIC_SETTINGS = _obj(
    "MetricSettings",
    {
        "timeGrain": Field("timeGrain", Schema(kind="duration", name="TimeSpan")),
        "category": Field("category", _str()),
        "enabled": Field("enabled", Schema(kind="bool", name="Boolean"), required=True),
        "retentionPolicy": Field("retentionPolicy", _RETENTION),
    },
)
# DiagnosticSettingsResource of the 2021-05-01-preview spec (hand-built: the pinned SDK has no model).
SCHEMA = _obj(
    "DiagnosticSettingsResource",
    {
        "id": Field("id", _str(), readonly=True),
        "name": Field("name", _str(), readonly=True),
        "type": Field("type", _str(), readonly=True),
        "systemData": Field("systemData", Schema(kind="any", name="SystemData"), readonly=True),
        "properties": Field(
            "properties",
            _obj(
                "DiagnosticSettings",
                {
                    "storageAccountId": Field("storageAccountId", _str()),
                    "serviceBusRuleId": Field("serviceBusRuleId", _str()),
                    "eventHubAuthorizationRuleId": Field("eventHubAuthorizationRuleId", _str()),
                    "eventHubName": Field("eventHubName", _str()),
                    "metrics": Field("metrics", Schema(kind="list", name="List", item=_METRIC_SETTINGS)),
                    "logs": Field("logs", Schema(kind="list", name="List", item=_LOG_SETTINGS)),
                    "workspaceId": Field("workspaceId", _str()),
                    "marketplacePartnerId": Field("marketplacePartnerId", _str()),
                    "logAnalyticsDestinationType": Field("logAnalyticsDestinationType", _str()),
                },
            ),
            required=True,
        ),
    },
)


def _bad(message: str, target: str | None = None) -> ArmError:
    # Azure answers diagnostic-setting refusals as 400 with code BadRequest, e.g. "Category
    # 'WorkflowRuntime' is not supported." (hashicorp/terraform-provider-azurerm#2985).
    return ArmError(400, "BadRequest", message, target=target)


class DiagnosticSettings:
    def __init__(self, em: Emulator) -> None:
        self.em = em

    def routes(self) -> list[Route]:
        v = apiversions.DIAGNOSTIC_SETTINGS
        base = "{*uri}/providers/Microsoft.Insights/diagnosticSettings"
        return [
            route("GET", base, self.list_settings, v, TYPE),
            route("GET", base + "/{name}", self.get, v, TYPE),
            route("PUT", base + "/{name}", self.put, v, TYPE),
            route("DELETE", base + "/{name}", self.delete, v, TYPE),
        ]

    # -- the target resource -------------------------------------------------------------------------

    def _target(self, ctx: Ctx) -> StoredResource:
        """The resource the settings belong to: it must exist (Azure: 404 for a missing resource)."""
        uri = ctx.params["uri"]
        rid = parse_resource_id(uri, target="resourceUri")
        if rid.subscription.lower() != ctx.subscription.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{rid.subscription}' could not be found.")
        resource = self.em.store.get(rid.key)
        if resource is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{rid.full_type}/{rid.name}' under resource group '{rid.resource_group}' was "
                "not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        if rid.type_key not in CATEGORIES:
            raise unsupported(
                f"The emulator serves diagnostic settings of application gateways and scale sets, not of "
                f"'{rid.full_type}'.",
                target="resourceUri",
            )
        return resource

    def _setting_id(self, resource: StoredResource, name: str) -> str:
        # as Azure answers it (createOrUpdateDiagnosticSetting.json): "<resource id>/providers/
        # microsoft.insights/diagnosticSettings/<name>"
        return f"{resource.id}/providers/microsoft.insights/diagnosticSettings/{name}"

    def _settings_of(self, resource: StoredResource) -> list[StoredResource]:
        prefix = resource.key + "/providers/microsoft.insights/diagnosticsettings/"
        return [s for s in self.em.store.of_type(TYPE_KEY) if s.key.startswith(prefix)]

    # -- handlers ------------------------------------------------------------------------------------

    async def list_settings(self, ctx: Ctx) -> Response:
        resource = self._target(ctx)
        # not pageable on Azure ("x-ms-pageable": {"nextLinkName": null})
        return json_response(200, {"value": [dict(s.body) for s in self._settings_of(resource)]})

    async def get(self, ctx: Ctx) -> Response:
        resource = self._target(ctx)
        existing = self.em.store.get(key_of(self._setting_id(resource, ctx.params["name"])))
        if existing is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The diagnostic setting '{ctx.params['name']}' doesn't exist.",
            )
        return json_response(200, existing.body)

    async def put(self, ctx: Ctx) -> Response:
        resource = self._target(ctx)
        name = ctx.params["name"]
        check_name(name, "diagnostic setting")
        body = validate(ctx.json_body(), SCHEMA)
        props: dict[str, Any] = dict(body["properties"])
        setting_key = key_of(self._setting_id(resource, name))
        existing = self.em.store.get(setting_key)
        others = [s for s in self._settings_of(resource) if s.key != setting_key]
        if existing is None and len(others) >= MAX_SETTINGS_PER_RESOURCE:
            raise _bad(
                f"The resource already has {MAX_SETTINGS_PER_RESOURCE} diagnostic settings: each resource can "
                f"have up to {MAX_SETTINGS_PER_RESOURCE}."
            )
        categories = CATEGORIES[resource.type_key]
        workspace_key = self._check_destinations(props)
        log_categories = self._check_logs(props, categories)
        metric_categories = self._check_metrics(props, categories)
        destination = props.get("logAnalyticsDestinationType")
        # "Possible values are: Dedicated and null (null is default.)" (the spec's DiagnosticSettings)
        if destination is not None and destination != "Dedicated":
            raise _bad(
                f"logAnalyticsDestinationType '{destination}' is not valid: use 'Dedicated' (resource-specific "
                "tables) or leave it null (AzureDiagnostics).",
                target="properties.logAnalyticsDestinationType",
            )
        self._check_sink_reuse(others, workspace_key, log_categories | metric_categories, categories)

        setting_id = existing.id if existing else self._setting_id(resource, name)
        stored_name = existing.body["name"] if existing else name
        stored = {
            "id": setting_id,
            "type": TYPE,
            "name": stored_name,
            "properties": {k: v for k, v in props.items() if not (isinstance(v, str) and v == "")},
        }
        uid = existing.internal.get("uid") if existing else None
        record = StoredResource(
            key=setting_key,
            id=setting_id,
            type_key=TYPE_KEY,
            rg_key=resource.rg_key,
            parent_key=None,  # an extension resource, not a child: the target's children stay its own
            body=stored,
            etag="",
            internal={"uid": uid or str(uuid.uuid4()), "resource_key": resource.key},
        )
        # the only log the emulator's gateways produce is the access log: it is collected while this
        # setting sends its category to the workspace, into the table the destination type names
        wanted: set[tuple[str, LogTable]] = set()
        if ACCESS_LOG in log_categories:
            wanted.add((workspace_key, "AGWAccessLogs" if destination == "Dedicated" else "AzureDiagnostics"))
        with self.em.store.write():
            self.em.store.put(record)
            self._record_periods(record, resource, wanted)
        # the spec answers 200 for create and update alike
        return json_response(200, stored)

    async def delete(self, ctx: Ctx) -> Response:
        resource = self._target(ctx)
        existing = self.em.store.get(key_of(self._setting_id(resource, ctx.params["name"])))
        if existing is None:
            return json_response(204, None)
        with self.em.store.write():
            self.em.store.delete(existing.key)
            self._record_periods(existing, resource, set())
        return json_response(200, None)

    # -- validation ----------------------------------------------------------------------------------

    def _check_destinations(self, props: dict[str, Any]) -> str:
        """The key of the workspace the setting sends to (the emulator's only kind of destination)."""
        for field in ("storageAccountId", "eventHubAuthorizationRuleId", "eventHubName", "serviceBusRuleId"):
            if props.get(field):
                raise unsupported(
                    f"The emulator has no storage accounts or event hubs: '{field}' cannot be honoured "
                    "(send to its Log Analytics workspace).",
                    target=f"properties.{field}",
                )
        if props.get("marketplacePartnerId"):
            raise unsupported(
                "The emulator has no partner solutions: 'marketplacePartnerId' cannot be honoured.",
                target="properties.marketplacePartnerId",
            )
        workspace = props.get("workspaceId") or None
        if workspace is None:
            # A setting routes data to a destination; one without any routes nothing. The emulator's
            # only destination kind is its workspace.
            raise _bad(
                "The diagnostic setting needs a destination: set properties.workspaceId to the resource id "
                "of a Log Analytics workspace.",
                target="properties.workspaceId",
            )
        # "The full ARM resource ID of the Log Analytics workspace" (the spec's workspaceId): not its
        # customer id, and a workspace that exists.
        rid = parse_resource_id(workspace, target="properties.workspaceId")
        found = self.em.store.get(rid.key)
        if rid.type_key != "microsoft.operationalinsights/workspaces" or found is None:
            own = self.em.identity.log_analytics_workspace_resource_id
            raise _bad(
                f"The Log Analytics workspace '{workspace}' was not found: workspaceId must be the ARM "
                f"resource id of an existing workspace (the emulator's is {own}).",
                target="properties.workspaceId",
            )
        return found.key

    def _check_logs(self, props: dict[str, Any], categories: _Categories) -> set[str]:
        """The log categories the setting enables (groups expanded)."""
        enabled: set[str] = set()
        for i, entry in enumerate(props.get("logs") or []):
            where = f"properties.logs[{i}]"
            category, group = entry.get("category"), entry.get("categoryGroup")
            if bool(category) == bool(group):
                raise _bad(f"{where} needs exactly one of 'category' and 'categoryGroup'.", target=where)
            if category:
                known = next((c for c in categories.logs if c.lower() == category.lower()), None)
                if known is None:
                    raise _bad(f"Category '{category}' is not supported.", target=f"{where}.category")
                entry["category"] = known
                members: tuple[str, ...] = (known,)
            else:
                if group.lower() not in categories.groups:
                    raise _bad(f"Category group '{group}' is not supported.", target=f"{where}.categoryGroup")
                entry["categoryGroup"] = _GROUP_NAMES[group.lower()]
                members = categories.groups[group.lower()]
            if entry["enabled"]:
                enabled.update(members)
        return enabled

    def _check_metrics(self, props: dict[str, Any], categories: _Categories) -> set[str]:
        enabled: set[str] = set()
        for i, entry in enumerate(props.get("metrics") or []):
            where = f"properties.metrics[{i}].category"
            category = entry.get("category") or ""
            known = next((c for c in categories.metrics if c.lower() == category.lower()), None)
            if known is None:
                supported = ", ".join(f"'{c}'" for c in categories.metrics)
                raise _bad(
                    f"Metric category '{category}' is not supported, supported categories are: {supported}",
                    target=where,
                )
            entry["category"] = known
            if entry["enabled"]:
                enabled.add(known)
        return enabled

    def _check_sink_reuse(
        self, others: list[StoredResource], workspace_key: str, categories: set[str], known: _Categories
    ) -> None:
        """Azure's 409: "Data sink '<workspace>' is already used in diagnostic setting '<name>' for
        category '<category>'. Data sinks can't be reused in different settings on the same category
        for the same resource." (Azure/terraform-azurerm-avm-ptn-aiml-landing-zone#19,
        Azure/bicep-registry-modules#3407)"""
        for other in others:
            props = other.body["properties"]
            if not props.get("workspaceId") or key_of(props["workspaceId"]) != workspace_key:
                continue
            taken = _enabled_categories(props, known)
            clash = sorted(categories & taken)
            if clash:
                raise ArmError(
                    409,
                    "Conflict",
                    f"Data sink '{props['workspaceId']}' is already used in diagnostic setting "
                    f"'{other.body['name']}' for category '{clash[0]}'. Data sinks can't be reused in "
                    "different settings on the same category for the same resource.",
                )

    # -- collection periods --------------------------------------------------------------------------

    def _periods(self) -> list[dict[str, Any]]:
        return list(json.loads(self.em.store.meta_get(_PERIODS_META) or "[]"))

    def _stale_end(self, period: dict[str, Any]) -> float | None:
        """An open period whose setting is gone without a DELETE (the resource or its group was
        deleted, which deletes its settings): it ended when that incarnation of the resource did.
        The resource's deletion time is not kept; a resource re-created since is the bound (Azure
        warns that a re-created resource may pick up the old settings again; the emulator never
        does: write the setting again)."""
        setting = self.em.store.get(period["setting"])
        if setting is not None and setting.internal.get("uid") == period["uid"]:
            return None
        resource = self.em.store.get(period["resource"])
        if resource is not None and resource.created_at > period["start"]:
            return float(resource.created_at)
        return time.time()

    def _record_periods(
        self, setting: StoredResource, resource: StoredResource, wanted: set[tuple[str, LogTable]]
    ) -> None:
        """Close this setting's spans that no longer apply, open the ones it now asks for (call in a
        store write)."""
        now = time.time()
        periods = self._periods()
        open_now: set[tuple[str, LogTable]] = set()
        for period in periods:
            if period["end"] is not None:
                continue
            stale = self._stale_end(period) if period["setting"] != setting.key else None
            if stale is not None:
                period["end"] = stale
                continue
            if period["setting"] != setting.key:
                continue
            if period["uid"] != setting.internal["uid"]:
                period["end"] = self._stale_end(period) or now
            elif (period["workspace"], period["table"]) in wanted:
                open_now.add((period["workspace"], period["table"]))
            else:
                period["end"] = now
        for workspace, table in sorted(wanted - open_now):
            periods.append(
                {
                    "setting": setting.key,
                    "uid": setting.internal["uid"],
                    "resource": resource.key,
                    "workspace": workspace,
                    "table": table,
                    "start": now,
                    "end": None,
                }
            )
        self.em.store.meta_set(_PERIODS_META, json.dumps(periods))

    def collections(self, workspace_key: str) -> list[LogCollection]:
        """What diagnostic settings sent (and send) into this workspace: the data plane's view."""
        found = []
        for period in self._periods():
            if period["workspace"] != workspace_key:
                continue
            end = period["end"] if period["end"] is not None else self._stale_end(period)
            found.append(
                LogCollection(resource_id=period["resource"], table=period["table"], start=period["start"], end=end)
            )
        return found


def _enabled_categories(props: dict[str, Any], known: _Categories) -> set[str]:
    """A stored setting's enabled categories, category groups expanded."""
    names: set[str] = set()
    for entry in props.get("logs") or []:
        if not entry.get("enabled"):
            continue
        if entry.get("category"):
            names.add(entry["category"])
        elif entry.get("categoryGroup"):
            names.update(known.groups.get(entry["categoryGroup"].lower(), ()))
    for entry in props.get("metrics") or []:
        if entry.get("enabled") and entry.get("category"):
            names.add(entry["category"])
    return names
