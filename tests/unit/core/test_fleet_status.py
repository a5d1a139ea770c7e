"""Fleet status rows, and `switchyard status`'s canary share, from plain observations."""

from __future__ import annotations

from datetime import timedelta

from switchyard.core.fleet_status import (
    COLUMNS,
    FleetMember,
    FleetStatus,
    fleet_row,
    format_age,
    unreachable_row,
)
from switchyard.core.image_metadata import TAG_RELEASED_AT, format_utc
from switchyard.core.rollout import TAG_PHASE, TAG_PREVIOUS, TAG_RELEASE
from switchyard.core.status import service_status
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import (
    OBSERVED_AT,
    V1,
    V2,
    address,
    context,
    image,
    observed,
    scale_set,
)

NOW = OBSERVED_AT + timedelta(days=3, hours=2)  # the images in cloud_states were built at OBSERVED_AT

STEADY = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 3))
FRESH = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0))
MID_CANARY = observed(
    scale_set(Color.BLUE, V1, 3),
    scale_set(Color.GREEN, V2, 3),
    canary=[address(Color.GREEN, 0)],
    tags={TAG_RELEASE: V2, TAG_PHASE: "canary"},
)
PROMOTED = observed(
    scale_set(Color.BLUE, V1, 3),
    scale_set(Color.GREEN, V2, 3),
    live=Color.GREEN,
    tags={TAG_RELEASE: V2, TAG_PHASE: "promoted", TAG_PREVIOUS: "blue"},
)
UNPROVISIONED = observed(scale_set(Color.BLUE, None, 0), scale_set(Color.GREEN, None, 0), gateway_exists=False)


def test_a_steady_service_shows_its_live_image_parts_age_and_health() -> None:
    row = fleet_row(STEADY, image(V1), NOW)

    assert row.state == "ok"
    assert (row.live_color, row.image_version) == ("blue", V1)
    assert (row.base, row.patch_level, row.app_version) == ("debian-12", "2026.11", "1.0.0")
    assert (row.healthy, row.total) == (3, 3)
    assert row.release_in_flight is None
    # Never released (no releasedAt tag): the age is the image's, since it was built.
    assert row.built_at == OBSERVED_AT and row.released_at is None
    assert row.age_s == timedelta(days=3, hours=2).total_seconds()
    assert row.cells() == {
        "service": "sample",
        "environment": "production",
        "live": "blue",
        "image": V1,
        "base": "debian-12",
        "patch": "2026.11",
        "app": "1.0.0",
        "age": "3d 2h",
        "health": "3/3",
        "release in flight": "-",
        "note": "",
    }


def test_the_age_counts_from_the_release_once_the_image_held_full_traffic() -> None:
    released = image(V1)
    released_at = OBSERVED_AT + timedelta(days=3)
    released = released.model_copy(update={"tags": {**released.tags, TAG_RELEASED_AT: format_utc(released_at)}})

    row = fleet_row(STEADY, released, NOW)

    assert row.released_at == released_at and row.cells()["age"] == "2h 0m"


def test_unhealthy_live_instances_show_in_the_health_column() -> None:
    sick = observed(
        scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0), health={address(Color.BLUE, 2): "Down"}
    )
    assert fleet_row(sick, image(V1), NOW).cells()["health"] == "2/3"


def test_a_fresh_topology_has_a_live_color_but_nothing_live() -> None:
    row = fleet_row(FRESH, None, NOW)

    assert row.state == "ok" and row.live_color == "blue" and row.image_version is None
    assert row.note == "nothing live yet"
    assert row.cells()["image"] == "-" and row.cells()["note"] == "nothing live yet"
    assert row.cells()["health"] == "0/0"


def test_mid_canary_the_release_in_flight_and_its_share_show() -> None:
    row = fleet_row(MID_CANARY, image(V1), NOW)

    assert row.live_color == "blue" and row.image_version == V1
    assert row.release_in_flight == f"{V2} canary 25%"


def test_a_canary_prepared_but_not_routed_serves_nobody() -> None:
    prepared = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        canary=[address(Color.GREEN, 0)],
        routed=False,
        tags={TAG_RELEASE: V2, TAG_PHASE: "canary"},
    )
    assert fleet_row(prepared, image(V1), NOW).release_in_flight == f"{V2} canary (not serving)"


def test_after_promotion_the_new_color_is_live_and_the_release_is_not_finished() -> None:
    row = fleet_row(PROMOTED, image(V2), NOW)

    assert (row.live_color, row.image_version, row.app_version) == ("green", V2, "1.1.0")
    assert row.release_in_flight == f"{V2} promoted, not finalized"


def test_finalized_and_rolled_back_releases_are_not_in_flight() -> None:
    for phase in ("finalized", "rolled-back"):
        tags = {TAG_RELEASE: V2, TAG_PHASE: phase}
        done = STEADY.model_copy(update={"gateway": STEADY.gateway.model_copy(update={"tags": tags})})
        assert fleet_row(done, image(V1), NOW).release_in_flight is None


def test_an_unprovisioned_service_gets_a_row_saying_so() -> None:
    row = fleet_row(UNPROVISIONED, None, NOW)

    assert row.state == "not-provisioned"
    assert row.cells()["live"] == "not-provisioned"
    assert row.cells()["note"] == "sample-production-agw does not exist: run `switchyard provision`"
    assert row.cells()["release in flight"] == "-"


def test_members_without_a_cloud_to_read_get_rows_not_errors() -> None:
    not_there = FleetMember(service="sample", environment="qa").fallback_row()
    broken = FleetMember(service="sample", environment="qa", problem="environment 'qa' cannot be loaded").fallback_row()

    assert not_there.state == "not-deployed" and not_there.note == "sample has no frontend ports in qa"
    assert broken.state == "unreachable" and broken.note == "environment 'qa' cannot be loaded"
    assert FleetMember(service="sample", environment="production", context=context()).context is not None


def test_mixed_versions_on_the_live_color_are_named() -> None:
    mixed = scale_set(Color.BLUE, V1, 3)
    instances = [*mixed.instances[:2], mixed.instances[2].model_copy(update={"image_version": V2})]
    state = observed(mixed.model_copy(update={"instances": instances}), scale_set(Color.GREEN, None, 0))

    row = fleet_row(state, None, NOW)
    assert row.image_version is None and row.note == "mixed versions"


def test_unusable_gallery_tags_leave_the_version_parts_and_say_why() -> None:
    row = fleet_row(STEADY, image(V1).model_copy(update={"tags": {}}), NOW)

    assert row.app_version == "1.0.0" and row.age_s is None
    assert row.note.startswith("gallery tags unusable: not a switchyard image version")


def test_the_text_table_has_one_line_per_pair_and_aligned_columns() -> None:
    report = FleetStatus(
        observed_at=NOW,
        rows=[
            fleet_row(MID_CANARY, image(V1), NOW),
            unreachable_row("sample", "staging", "emulator.json does not exist"),
        ],
    )
    lines = report.text().splitlines()

    assert lines[0].split() == [
        "SERVICE",
        "ENVIRONMENT",
        "LIVE",
        "IMAGE",
        "BASE",
        "PATCH",
        "APP",
        "AGE",
        "HEALTH",
        "RELEASE",
        "IN",
        "FLIGHT",
        "NOTE",
    ]
    assert lines[1].split()[:4] == ["sample", "production", "blue", V1]
    assert lines[2].split()[:3] == ["sample", "staging", "unreachable"]
    assert lines[2].endswith("emulator.json does not exist")
    assert lines[3] == "2 service/environment pair(s), read at 2026-11-29 12:00:00 UTC"
    assert [list(row) for row in report.table()] == [list(COLUMNS), list(COLUMNS)]


def test_ages_read_as_days_hours_or_minutes() -> None:
    assert [format_age(s) for s in (None, 59, 600, 7260, 90000)] == ["-", "0m", "10m", "2h 1m", "1d 1h"]


def test_status_counts_a_canary_share_only_while_the_canary_serves() -> None:
    serving = service_status(MID_CANARY)
    assert serving.canary_share == 0.25 and "canary 25%" in serving.text()

    prepared = observed(
        scale_set(Color.BLUE, V1, 3),
        scale_set(Color.GREEN, V2, 3),
        canary=[address(Color.GREEN, 0)],
        routed=False,
    )
    report = service_status(prepared)
    assert report.canary_share == 0.0 and report.canary_addresses == [address(Color.GREEN, 0)]
    assert "idle instance(s) in the canary pool, not serving" in report.text()
