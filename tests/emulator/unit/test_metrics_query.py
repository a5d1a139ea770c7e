"""Metrics - List semantics over a real telemetry DB: timespan, interval, aggregation, filter, split."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.monitor.models import MetricDefinitionCollection, Response
from emulator_testdata import GATEWAY_ID, SCALE_SET_ID, T0

from switchyard_emulator.dataplane.errors import MetricsQueryError
from switchyard_emulator.dataplane.metric_definitions import metric_definitions_body
from switchyard_emulator.dataplane.metrics import MetricsEngine
from switchyard_emulator.dataplane.timespec import format_instant
from switchyard_emulator.profiles import TimingOverrides, timing_profile

GATEWAY_TYPE = "Microsoft.Network/applicationGateways"
SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"


def iso(ts: float) -> str:
    return format_instant(ts)


def span(start: float, end: float) -> str:
    return f"{iso(start)}/{iso(end)}"


def query_gateway(db: Path, **query: str) -> dict[str, Any]:
    return MetricsEngine(db).query(GATEWAY_ID, GATEWAY_TYPE, query, now=datetime.fromtimestamp(T0 + 3600, UTC))


def points(body: dict[str, Any], metric: int = 0, series: int = 0) -> list[dict[str, Any]]:
    return body["value"][metric]["timeseries"][series]["data"]


def series_by(body: dict[str, Any], metric: int = 0) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    return {
        tuple(meta["value"] for meta in element["metadatavalues"]): element["data"]
        for element in body["value"][metric]["timeseries"]
    }


def test_total_requests_per_second_bucket_with_whole_second_timestamps(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    for offset in (0.1, 0.5, 0.9, 1.2, 3.7):
        add_request(T0 + offset)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 4),
        interval="PT1S",
        metricnames="TotalRequests",
        aggregation="Total",
    )
    assert body["interval"] == "PT1S"
    assert body["timespan"] == "2026-01-01T00:00:00Z/2026-01-01T00:00:04Z"
    assert [(p["timeStamp"], p["total"]) for p in points(body)] == [
        ("2026-01-01T00:00:00Z", 3.0),
        ("2026-01-01T00:00:01Z", 1.0),
        ("2026-01-01T00:00:02Z", 0.0),
        ("2026-01-01T00:00:03Z", 1.0),
    ]
    assert body["value"][0]["unit"] == "Count"
    assert body["namespace"] == "microsoft.network/applicationgateways"
    # The body is what the real SDK deserializes into its Response model.
    parsed = Response.deserialize(body)
    metric = parsed.value[0]
    assert metric.name.value == "TotalRequests"
    assert metric.timeseries is not None and metric.timeseries[0].data is not None
    assert [point.total for point in metric.timeseries[0].data] == [3.0, 1.0, 0.0, 1.0]


def test_rows_outside_the_timespan_are_not_counted_even_inside_its_first_bucket(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    for offset in (0.2, 10.0, 30.5, 59.9, 60.0):
        add_request(T0 + offset)
    body = query_gateway(telemetry_db, timespan=span(T0 + 5, T0 + 60), interval="PT1M", metricnames="TotalRequests")
    assert [(p["timeStamp"], p["total"]) for p in points(body)] == [("2026-01-01T00:00:00Z", 3.0)]


def test_default_aggregation_is_the_metrics_primary_one(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 1, time_taken_ms=10, backend_time_ms=4)
    add_request(T0 + 2, time_taken_ms=30, backend_time_ms=6)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="TotalRequests,ApplicationGatewayTotalTime",
    )
    assert points(body, 0)[0] == {"timeStamp": "2026-01-01T00:00:00Z", "total": 2.0}
    assert points(body, 1)[0] == {"timeStamp": "2026-01-01T00:00:00Z", "average": 20.0}
    assert body["value"][1]["unit"] == "MilliSeconds"


def test_all_aggregations_of_backend_last_byte_response_time(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    for backend_ms in (2.0, 4.0, 12.0):
        add_request(T0 + 1, backend_time_ms=backend_ms)
    add_request(T0 + 2, backend=None, status=502)  # no backend: no backend time sample
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="backendlastbyteresponsetime",  # names are case-insensitive
        aggregation="average,minimum,maximum,total,count",
    )
    assert body["value"][0]["name"]["value"] == "BackendLastByteResponseTime"
    point = points(body)[0]
    assert point == {
        "timeStamp": "2026-01-01T00:00:00Z",
        "average": 6.0,
        "minimum": 2.0,
        "maximum": 12.0,
        "total": 18.0,
        "count": 3.0,
    }


def test_an_empty_bucket_has_zero_count_and_total_but_no_average(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    add_request(T0 + 1)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 120),
        metricnames="TotalRequests,ApplicationGatewayTotalTime",
        aggregation="total,count,average",
    )
    assert points(body, 0)[1] == {"timeStamp": "2026-01-01T00:01:00Z", "total": 0.0, "count": 0.0}
    assert points(body, 1)[1] == {"timeStamp": "2026-01-01T00:01:00Z", "count": 0.0}


def test_split_by_backend_server_counts_each_backend_ip(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for _ in range(5):
        add_request(T0 + 1, backend="127.1.0.2:8000")
    for _ in range(3):
        add_request(T0 + 2, backend="127.1.0.3:8000", status=500)
    add_request(T0 + 3, backend=None, status=502)  # never reached a backend
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="BackendResponseStatus",
        **{"$filter": "BackendServer eq '*'"},
    )
    by_server = series_by(body)
    assert {server: data[0]["total"] for server, data in by_server.items()} == {
        ("127.1.0.2",): 5.0,
        ("127.1.0.3",): 3.0,
    }
    meta = body["value"][0]["timeseries"][0]["metadatavalues"][0]
    assert meta["name"] == {"value": "backendserver", "localizedValue": "backendserver"}


def test_filter_on_two_dimensions_splits_by_both(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 1, backend="127.1.0.2:8000", status=200)
    add_request(T0 + 1, backend="127.1.0.2:8000", status=500)
    add_request(T0 + 1, backend="127.1.0.2:8000", status=503)
    add_request(T0 + 1, backend="127.1.0.3:8000", status=404)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="BackendResponseStatus",
        **{"$filter": "BackendServer eq '*' and HttpStatusGroup eq '*'"},
    )
    assert {key: data[0]["total"] for key, data in series_by(body).items()} == {
        ("127.1.0.2", "2xx"): 1.0,
        ("127.1.0.2", "5xx"): 2.0,
        ("127.1.0.3", "4xx"): 1.0,
    }


def test_filter_on_values_with_or_keeps_only_those_values(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for status in (200, 200, 302, 404, 500, 500, 500):
        add_request(T0 + 1, status=status)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="ResponseStatus",
        **{"$filter": "HttpStatusGroup eq '5XX' or HttpStatusGroup eq '4xx'"},  # values: any case
    )
    assert {key: data[0]["total"] for key, data in series_by(body).items()} == {("5xx",): 3.0, ("4xx",): 1.0}


def test_ne_filters_without_splitting(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for status in (200, 200, 500):
        add_request(T0 + 1, status=status)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="ResponseStatus",
        **{"$filter": "HttpStatusGroup ne '5xx'"},
    )
    assert body["value"][0]["timeseries"][0]["metadatavalues"] == []
    assert points(body)[0]["total"] == 2.0


def test_failed_requests_count_5xx_per_pool_and_settings(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 1, pool="blue", status=500)
    add_request(T0 + 1, pool="blue", status=200)
    add_request(T0 + 1, pool="green", status=502, backend=None)
    add_request(T0 + 1, pool="green", status=404)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="FailedRequests",
        **{"$filter": "BackendSettingsPool eq '*'"},
    )
    assert {key: data[0]["total"] for key, data in series_by(body).items()} == {
        ("blue~service",): 1.0,
        ("green~service",): 1.0,
    }


def test_two_metrics_in_one_query_answer_a_value_each_under_the_same_filter(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    add_request(T0 + 1, pool="blue", status=500)
    add_request(T0 + 1, pool="blue", status=200)
    add_request(T0 + 1, pool="green", status=200)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="TotalRequests,FailedRequests",
        aggregation="Total",
        **{"$filter": "BackendSettingsPool eq 'blue~service'"},
    )
    assert [value["name"]["value"] for value in body["value"]] == ["TotalRequests", "FailedRequests"]
    assert [sum(p["total"] for p in points(body, metric)) for metric in (0, 1)] == [2.0, 1.0]


def test_top_and_orderby_pick_the_busiest_series(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for ip, count in (("127.1.0.2", 5), ("127.1.0.3", 1), ("127.1.0.4", 3)):
        for _ in range(count):
            add_request(T0 + 1, backend=f"{ip}:8000")
    common = {
        "timespan": span(T0, T0 + 60),
        "metricnames": "BackendResponseStatus",
        "$filter": "BackendServer eq '*'",
        "top": "2",
    }
    descending = query_gateway(telemetry_db, **common, orderby="sum desc")
    assert [key for key in series_by(descending)] == [("127.1.0.2",), ("127.1.0.4",)]
    ascending = query_gateway(telemetry_db, **common, orderby="Total asc")
    assert [key for key in series_by(ascending)] == [("127.1.0.3",), ("127.1.0.4",)]


def test_full_interval_answers_one_point_for_the_whole_timespan(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    for offset in (1, 61, 200):
        add_request(T0 + offset)
    body = query_gateway(telemetry_db, timespan=span(T0, T0 + 300), interval="FULL", metricnames="TotalRequests")
    assert points(body) == [{"timeStamp": "2026-01-01T00:00:00Z", "total": 3.0}]


def test_sub_minute_interval_aligns_buckets_to_its_grain(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    for offset in (7.0, 9.9, 10.0, 14.0):
        add_request(T0 + offset)
    body = query_gateway(telemetry_db, timespan=span(T0 + 7, T0 + 15), interval="PT5S", metricnames="TotalRequests")
    assert [(p["timeStamp"], p["total"]) for p in points(body)] == [
        ("2026-01-01T00:00:05Z", 2.0),
        ("2026-01-01T00:00:10Z", 2.0),
    ]


def test_start_and_duration_timespan(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 30)
    add_request(T0 + 90)
    body = query_gateway(telemetry_db, timespan=f"{iso(T0)}/PT1M", metricnames="TotalRequests")
    assert body["timespan"] == "2026-01-01T00:00:00Z/2026-01-01T00:01:00Z"
    assert [p["total"] for p in points(body)] == [1.0]


def test_metadata_result_type_lists_series_without_data(telemetry_db: Path, add_request: Callable[..., None]) -> None:
    add_request(T0 + 1, backend="127.1.0.2:8000")
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="BackendResponseStatus",
        resultType="Metadata",
        **{"$filter": "BackendServer eq '*'"},
    )
    (element,) = body["value"][0]["timeseries"]
    assert "data" not in element
    assert element["metadatavalues"][0]["value"] == "127.1.0.2"


def test_healthy_host_count_averages_samples_per_pool_and_settings(
    telemetry_db: Path, add_health: Callable[..., None]
) -> None:
    for second, healthy in enumerate((3, 3, 2, 2)):
        add_health(T0 + second, "blue", "service", healthy, 3 - healthy)
    add_health(T0, "green", "service", 0, 3)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="HealthyHostCount,UnhealthyHostCount",
        **{"$filter": "BackendSettingsPool eq '*'"},
    )
    healthy_by_pool = {key: data[0]["average"] for key, data in series_by(body, 0).items()}
    unhealthy_by_pool = {key: data[0]["average"] for key, data in series_by(body, 1).items()}
    assert healthy_by_pool == {("blue~service",): 2.5, ("green~service",): 0.0}
    assert unhealthy_by_pool == {("blue~service",): 0.5, ("green~service",): 3.0}


def test_scale_set_cpu_split_by_vm_name(telemetry_db: Path, add_instance_sample: Callable[..., None]) -> None:
    for second in range(4):
        add_instance_sample(T0 + second, "sample-test-blue_0", 10.0 + second)
        add_instance_sample(T0 + second, "sample-test-blue_1", 80.0)
    engine = MetricsEngine(telemetry_db)
    body = engine.query(
        SCALE_SET_ID.upper(),  # ids are matched case-insensitively, like ARM
        SCALE_SET_TYPE,
        {"timespan": span(T0, T0 + 60), "metricnames": "Percentage CPU", "$filter": "VMName eq '*'"},
        region="westeurope",
    )
    assert body["resourceregion"] == "westeurope"
    assert body["value"][0]["unit"] == "Percent"
    assert {key: data[0]["average"] for key, data in series_by(body).items()} == {
        ("sample-test-blue_0",): 11.5,
        ("sample-test-blue_1",): 80.0,
    }
    memory = engine.query(
        SCALE_SET_ID, SCALE_SET_TYPE, {"timespan": span(T0, T0 + 60), "metricnames": "Available Memory Bytes"}
    )
    assert memory["value"][0]["unit"] == "Bytes"
    assert points(memory)[0]["average"] == 5e8


def test_no_data_at_all_answers_one_unsplit_series_of_zeros_and_no_split_series(telemetry_db: Path) -> None:
    unsplit = query_gateway(telemetry_db, timespan=span(T0, T0 + 120), metricnames="TotalRequests")
    assert [p["total"] for p in points(unsplit)] == [0.0, 0.0]
    split = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 120),
        metricnames="TotalRequests",
        **{"$filter": "BackendSettingsPool eq '*'"},
    )
    assert split["value"][0]["timeseries"] == []


@pytest.mark.parametrize(
    ("query", "message_part"),
    [
        ({"metricnames": "RequestsPerFortnight"}, "metric: RequestsPerFortnight"),
        ({"metricnames": "TotalRequests", "aggregation": "median"}, "Invalid aggregation 'median'"),
        ({"metricnames": "TotalRequests", "interval": "PT0.5S"}, "finest grain"),
        ({"metricnames": "TotalRequests", "interval": "1 minute"}, "not an ISO 8601 duration"),
        ({"metricnames": "TotalRequests", "timespan": "yesterday/today"}, "Invalid timespan"),
        (
            {"metricnames": "TotalRequests", "$filter": "HttpStatusGroup eq '5xx'"},
            "has no dimension 'HttpStatusGroup'",
        ),
        (
            {
                "metricnames": "BackendResponseStatus",
                "$filter": "BackendServer eq 'a' or HttpStatusGroup eq '5xx'",
            },
            "'or' cannot join conditions on different dimensions",
        ),
        ({"metricnames": "TotalRequests", "$filter": "BackendSettingsPool gt '1'"}, "operator 'gt'"),
        ({"metricnames": "TotalRequests", "top": "-3"}, "Invalid top"),
        ({"metricnames": ",".join(["TotalRequests"] * 21)}, "at most 20 in one request"),
        ({"metricnames": "TotalRequests", "resultType": "Everything"}, "Invalid resultType"),
        (
            {"metricnames": "TotalRequests", "metricnamespace": "Microsoft.Compute/virtualMachines"},
            "metricnamespace",
        ),
    ],
)
def test_bad_queries_raise_a_400_error_naming_the_problem(
    telemetry_db: Path, query: dict[str, str], message_part: str
) -> None:
    with pytest.raises(MetricsQueryError) as caught:
        query_gateway(telemetry_db, **{"timespan": span(T0, T0 + 60), **query})
    assert caught.value.status == 400
    assert message_part in caught.value.message
    assert caught.value.to_body()["error"]["message"] == caught.value.message


def test_unknown_dimension_is_ignored_when_validate_dimensions_is_false(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    add_request(T0 + 1)
    body = query_gateway(
        telemetry_db,
        timespan=span(T0, T0 + 60),
        metricnames="TotalRequests",
        ValidateDimensions="false",
        **{"$filter": "Flavour eq 'vanilla'"},
    )
    assert points(body)[0]["total"] == 1.0


def test_unsupported_resource_type_is_refused() -> None:
    with pytest.raises(MetricsQueryError, match="no metrics for resource type"):
        metric_definitions_body(
            "/subscriptions/x/resourceGroups/y/providers/Microsoft.Web/sites/z", "Microsoft.Web/sites"
        )


def test_metric_definitions_deserialize_with_the_sdk_and_list_azure_names_and_dimensions() -> None:
    body = metric_definitions_body(GATEWAY_ID, GATEWAY_TYPE)
    parsed = MetricDefinitionCollection.deserialize(body)
    by_name = {}
    for definition in parsed.value:
        assert definition.name is not None, "every metric definition has a name"
        by_name[definition.name.value] = definition
    assert {"TotalRequests", "FailedRequests", "ResponseStatus", "BackendResponseStatus",
            "BackendLastByteResponseTime", "ApplicationGatewayTotalTime", "HealthyHostCount",
            "UnhealthyHostCount"} <= set(by_name)  # fmt: skip
    dimensions = by_name["BackendResponseStatus"].dimensions
    assert dimensions is not None
    assert [d.value for d in dimensions] == [
        "BackendServer",
        "BackendPool",
        "BackendHttpSetting",
        "HttpStatusGroup",
    ]
    assert by_name["HealthyHostCount"].primary_aggregation_type == "Average"
    assert by_name["TotalRequests"].primary_aggregation_type == "Total"
    vm = metric_definitions_body(SCALE_SET_ID, SCALE_SET_TYPE)
    assert [d["name"]["value"] for d in vm["value"]] == [
        "Percentage CPU",
        "Available Memory Bytes",
        "Network In Total",
        "Network Out Total",
    ]
    assert vm["value"][0]["unit"] == "Percent"
    # Azure's supported-metrics table: the network totals are Bytes, aggregated as Total, per VMName.
    for network in vm["value"][2:]:
        assert (network["unit"], network["primaryAggregationType"]) == ("Bytes", "Total")
        assert [d["value"] for d in network["dimensions"]] == ["VMName"]


# -- the azure timing profile: Azure's grains only, and datapoints that arrive a minute late --------


def azure_engine(db: Path, latency_s: float = 60.0) -> MetricsEngine:
    return MetricsEngine(db, timing_profile("azure", TimingOverrides(metrics_latency_s=latency_s)))


@pytest.mark.parametrize("interval", ["PT1S", "PT30S", "PT3M", "PT2H"])
def test_azure_profile_refuses_grains_azure_does_not_have(telemetry_db: Path, interval: str) -> None:
    with pytest.raises(MetricsQueryError) as caught:
        azure_engine(telemetry_db).query(
            GATEWAY_ID, GATEWAY_TYPE, {"interval": interval, "metricnames": "TotalRequests"},
            now=datetime.fromtimestamp(T0 + 3600, UTC),
        )  # fmt: skip
    assert caught.value.status == 400
    assert caught.value.message == (
        f"Invalid time grain duration: {interval}, supported ones are: "
        "00:01:00,00:05:00,00:15:00,00:30:00,01:00:00,06:00:00,12:00:00,1.00:00:00"
    )


def test_a_minute_is_published_only_a_minute_after_it_ends(
    telemetry_db: Path, add_request: Callable[..., None]
) -> None:
    # one request in each of the minutes T0, T0+1m, T0+2m; "now" is 2m30s after T0
    for minute in range(3):
        add_request(T0 + 60 * minute + 10)
    now = datetime.fromtimestamp(T0 + 150, UTC)
    query = {"timespan": span(T0, T0 + 180), "interval": "PT1M", "metricnames": "TotalRequests", "aggregation": "Total"}
    data = points(azure_engine(telemetry_db).query(GATEWAY_ID, GATEWAY_TYPE, query, now=now))
    # minute 0 ended 90 s ago (published); minute 1 ended 30 s ago (not yet); minute 2 is running
    assert data == [
        {"timeStamp": "2026-01-01T00:00:00Z", "total": 1.0},
        {"timeStamp": "2026-01-01T00:01:00Z"},
        {"timeStamp": "2026-01-01T00:02:00Z"},
    ]
    full = azure_engine(telemetry_db).query(GATEWAY_ID, GATEWAY_TYPE, {**query, "interval": "FULL"}, now=now)
    assert points(full)[0]["total"] == 1.0
    # the fast profile publishes at once
    fast = MetricsEngine(telemetry_db).query(GATEWAY_ID, GATEWAY_TYPE, query, now=now)
    assert [p.get("total") for p in points(fast)] == [1.0, 1.0, 1.0]


def test_metric_definitions_list_the_profiles_grains() -> None:
    fast = metric_definitions_body(GATEWAY_ID, GATEWAY_TYPE, timing_profile("fast"))
    azure = metric_definitions_body(GATEWAY_ID, GATEWAY_TYPE, timing_profile("azure"))
    grains = [a["timeGrain"] for a in azure["value"][0]["metricAvailabilities"]]
    assert grains == ["PT1M", "PT5M", "PT15M", "PT30M", "PT1H", "PT6H", "PT12H", "P1D"]
    assert fast["value"][0]["metricAvailabilities"][0]["timeGrain"] == "PT1S"
