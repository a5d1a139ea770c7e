"""The monthly patch's waves: lower waves first, and a wave that failed holds back the rest."""

from __future__ import annotations

from datetime import UTC, datetime

from switchyard.core.reports import monthly_patch_report
from switchyard.core.routine import ServicePatch, held_back, patch_waves


def test_services_go_in_their_waves_lowest_first_and_by_name_within_one() -> None:
    waves = patch_waves({"web": 2, "auth": 1, "billing": 2, "search": 3, "api": 1})
    assert waves == [["api", "auth"], ["billing", "web"], ["search"]]


def test_a_fleet_without_waves_is_one_wave() -> None:
    assert patch_waves({"b": 1, "a": 1}) == [["a", "b"]]
    assert patch_waves({}) == []


def test_the_services_held_back_say_which_failure_held_them() -> None:
    failed = [ServicePatch(service="auth", result="failed", detail="stopped in staging: rolled-back")]
    held = held_back(["billing", "web"], failed)
    assert [(h.service, h.result) for h in held] == [("billing", "held"), ("web", "held")]
    assert all(h.detail == "not tried: an earlier wave failed (auth)" for h in held)


def test_the_report_counts_the_services_held_back() -> None:
    results = [
        ServicePatch(service="api", result="patched"),
        ServicePatch(service="auth", result="failed", detail="the rebuild failed"),
        *held_back(["web"], [ServicePatch(service="auth", result="failed")]),
    ]
    report = monthly_patch_report(results, ["staging", "production"], datetime(2026, 12, 1, tzinfo=UTC))
    assert "1 patched, 0 skipped, 1 failed, 1 held back (an earlier wave failed)." in report.markdown
    assert "| web | - | - | - | - | **held**: not tried: an earlier wave failed (auth) |" in report.markdown
