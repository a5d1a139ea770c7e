"""Feature flags' pure rules: which names and values a person may give, which databases the flag store
takes, what a release policy's enable_flags may say, and how a release and a flip report them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchyard.core.config import ServiceContext
from switchyard.core.flags import (
    FlagChange,
    FlagState,
    check_flag_name,
    database_problem,
    parse_flag_value,
    sqlite_path,
)
from switchyard.core.plan import plan_release
from switchyard.core.preflight import check_release
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.reports import flag_report, release_report
from switchyard.core.rollout import ReleasePolicy, Strategy
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import V1, V2, context, image, observed, quota, scale_set

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def with_database(databases: dict[str, str]) -> ServiceContext:
    base = context()
    return base.model_copy(update={"service": base.service.model_copy(update={"database": databases})})


@pytest.mark.parametrize("name", ["a", "new_greeting", "checkout_v2", "x" * 63])
def test_a_flag_name_is_a_lower_case_identifier(name: str) -> None:
    assert check_flag_name(name) == name


@pytest.mark.parametrize("name", ["", "New_greeting", "2fa", "_hidden", "new-greeting", "new greeting", "x" * 64, "é"])
def test_any_other_name_is_refused_saying_what_a_name_is(name: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_flag_name(name)
    assert f"flag name {name!r} is not valid: a lower-case letter, then up to 62" in str(refused.value)


def test_a_flag_is_turned_on_or_off_and_nothing_else_reads_as_either() -> None:
    assert parse_flag_value("on") is True and parse_flag_value("off") is False
    for typo in ("ON", "true", "1", "enable", "", "of"):
        with pytest.raises(ValueError, match="is neither on nor off"):
            parse_flag_value(typo)


def test_the_store_takes_sqlite_urls_with_an_absolute_path() -> None:
    # Everything after sqlite:// is the path, as the sample app and its migrations read it.
    assert sqlite_path("sqlite:///var/lib/sample/flags.sqlite3") == "/var/lib/sample/flags.sqlite3"
    # {state_dir} is an absolute path, so sqlite:///{state_dir}/... has four slashes: the same file.
    assert sqlite_path("sqlite:////var/lib/sample/flags.sqlite3") == "/var/lib/sample/flags.sqlite3"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://switchyard@db.internal/sample", "cannot use a postgresql database: only SQLite is implemented"),
        ("mssql://db.internal/sample", "cannot use a mssql database: only SQLite is implemented"),
        ("/var/lib/sample.sqlite3", "is not a database URL: only SQLite is implemented: sqlite:// followed by an"),
        ("sqlite://databases/sample.sqlite3", "'databases/sample.sqlite3' is not absolute"),
        ("sqlite:///var/lib/sample.sqlite3?mode=ro", "has a query or fragment"),
    ],
)
def test_every_other_database_url_is_refused_saying_what_is_supported(url: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        sqlite_path(url)
    assert says in str(refused.value)


def test_a_service_without_a_database_in_the_environment_is_told_what_to_configure() -> None:
    problem = database_problem(with_database({"staging": "sqlite:///{state_dir}/s.sqlite3"}).service, "production")
    assert problem == (
        "service 'sample' has no database in 'production', and flags live in it: set the service's database for "
        "production (the service block's `database`, e.g. production: "
        "sqlite:///{state_dir}/databases/sample-production.sqlite3)"
    )
    # {state_dir} is the worker's state folder, an absolute path: the template is a usable URL.
    templated = with_database({"production": "sqlite:///{state_dir}/databases/sample-production.sqlite3"})
    assert database_problem(templated.service, "production") is None
    elsewhere = with_database({"production": "postgresql://switchyard@db.internal/sample"})
    assert "only SQLite is implemented" in str(database_problem(elsewhere.service, "production"))


def change(previous: bool | None, enabled: bool = True, by: str = "release 0f4c") -> FlagChange:
    return FlagChange(
        service="sample",
        environment="production",
        name="new_greeting",
        enabled=enabled,
        previous=previous,
        updated_at=AT,
        updated_by=by,
        database="/state/databases/sample-production.sqlite3",
    )


def test_a_flip_says_what_it_was_and_lists_every_flag_there() -> None:
    flip = change(previous=True, enabled=False, by="set-flag 77aa")
    assert flip.describe() == "flag new_greeting of sample in production: off (was on)"
    assert change(previous=None).describe() == "flag new_greeting of sample in production: on (was no row: off)"
    assert change(previous=True).describe() == "flag new_greeting of sample in production: on (was on, unchanged)"

    others = [
        FlagState(name="checkout_v2", enabled=True, updated_at=AT, updated_by="release 0f4c"),
        FlagState(name="new_greeting", enabled=False, updated_at=AT, updated_by="set-flag 77aa"),
    ]
    report = flag_report(flip, others)

    assert report.description == flip.describe()
    assert report.markdown.startswith("# Flag new_greeting of sample in production: **OFF**")
    assert "| new_greeting | on | **off** | 2026-12-03 09:30:00 | set-flag 77aa |" in report.markdown
    assert "| checkout_v2 | on | 2026-12-03 09:30:00 | release 0f4c |" in report.markdown


def test_a_release_policy_enables_valid_flags_each_once() -> None:
    assert ReleasePolicy(enable_flags=["new_greeting", "checkout_v2"]).enable_flags == ["new_greeting", "checkout_v2"]
    assert ReleasePolicy().enable_flags == []
    with pytest.raises(ValidationError, match="flag name 'New-Greeting' is not valid"):
        ReleasePolicy(enable_flags=["New-Greeting"])
    with pytest.raises(ValidationError, match="enable_flags names new_greeting more than once"):
        ReleasePolicy(enable_flags=["new_greeting", "checkout_v2", "new_greeting"])


STEADY = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 0))
FLAGGED = ReleasePolicy(strategy=Strategy.BLUE_GREEN, enable_flags=["new_greeting"])


def test_preflight_refuses_flags_that_could_not_be_set_after_the_promotion() -> None:
    """After the promotion a failed flag write could only be a warning: a store that cannot work as
    configured is refused before the release changes anything."""
    found = check_release(context(), FLAGGED, image(), [], STEADY, quota(), MetricTiming.for_grain(1))

    assert found.problems == [
        "the release policy's enable_flags (new_greeting) cannot be set: service 'sample' has no database in "
        "'production', and flags live in it: set the service's database for production (the service block's "
        "`database`, e.g. production: sqlite:///{state_dir}/databases/sample-production.sqlite3)"
    ]
    ready = with_database({"production": "sqlite:///{state_dir}/databases/sample-production.sqlite3"})
    fine = check_release(ready, FLAGGED, image(), [], STEADY, quota(), MetricTiming.for_grain(1))
    assert fine.refusal is None
    assert "flags new_greeting go on in the service's database once promoted" in fine.checks
    plan = plan_release(ready, FLAGGED, image(), [], STEADY, quota(), MetricTiming.for_grain(1))
    assert plan.steps[-1].kind == "finalize" and plan.steps[-1].title.endswith("; then flags new_greeting go on")


def test_a_release_summary_shows_the_flags_it_turned_on() -> None:
    summary = ReleaseSummary(
        service="sample", environment="production", image_version=V2, strategy="blue-green", started_at=AT
    )
    summary.outcome = "promoted"
    summary.flags = [change(previous=None)]

    markdown = release_report(summary).markdown

    assert "## Flags turned on" in markdown
    assert "| new_greeting | off (no row) | **on** | 2026-12-03 09:30:00 | release 0f4c |" in markdown
