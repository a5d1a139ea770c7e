"""TrafficReport.around_verdict: the one definition of how long users met a version judged bad,
which bench/reliability.py and bench/azure_profile_release.py both report."""

from __future__ import annotations

import pytest

from switchyard.stages.traffic import RequestRecord, TrafficReport


def answer(started: float, version: str, status: int = 200) -> RequestRecord:
    return RequestRecord(started=started, finished=started + 0.01, status=status, image_version=version)


def test_from_the_bad_versions_first_answer_to_the_verdict_and_on_to_its_last() -> None:
    report = TrafficReport(
        [answer(10.0, "v1"), answer(11.0, "v3"), answer(11.5, "v3", 500), answer(12.5, "v3"), answer(13.0, "v1")]
    )

    first_to_verdict, verdict_to_back = report.around_verdict("v3", verdict_at=12.0)

    # Its first answer counts, failed or not: users met the version from then.
    assert first_to_verdict == pytest.approx(1.0)
    assert verdict_to_back == pytest.approx(0.5)


def test_nothing_after_the_verdict_is_no_time_back_and_no_answer_at_all_is_unknown() -> None:
    report = TrafficReport([answer(10.0, "v3", 500), answer(11.0, "v1")])

    assert report.around_verdict("v3", verdict_at=12.0) == (pytest.approx(2.0), 0.0)
    assert report.around_verdict("v9", verdict_at=12.0) == (None, None)
