"""CVSS v3 base scores, checked against the scores recorded in real reports and NVD."""

from __future__ import annotations

import json

import pytest

from switchyard.core.findings import Severity
from switchyard.images.scanners.cvss import CvssError, cvss3_base_score, severity_from_score
from tests.datasets import TRIVY_REPORTS


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        # The four vectors in the shared PyPA snapshot, with NVD's published scores.
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),  # werkzeug CVE-2023-46136
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N", 8.1),  # urllib3 CVE-2023-43804
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
        ("CVSS:3.1/AV:A/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N", 4.2),  # urllib3 CVE-2023-45803
        ("CVSS:3.0/AV:L/AC:L/PR:H/UI:N/S:C/C:H/I:N/A:N", 6.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O", 9.8),  # temporal metrics ignored
    ],
)
def test_base_scores(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_scores_match_those_trivy_recorded_in_the_pip_report() -> None:
    # (The amazonlinux golden file pairs a vector with another CVE's score: it is test data, not NVD's.)
    report = json.loads((TRIVY_REPORTS / "pip.json.golden").read_text())
    pairs = [
        (cvss["V3Vector"], cvss["V3Score"])
        for result in report["Results"]
        for vulnerability in result["Vulnerabilities"]
        for cvss in vulnerability["CVSS"].values()
        if "V3Vector" in cvss
    ]
    assert len(pairs) == 4
    for vector, score in pairs:
        assert cvss3_base_score(vector) == score, vector


@pytest.mark.parametrize(
    ("score", "severity"),
    [(10.0, Severity.CRITICAL), (9.0, Severity.CRITICAL), (8.9, Severity.HIGH), (7.0, Severity.HIGH),
     (6.9, Severity.MEDIUM), (4.0, Severity.MEDIUM), (3.9, Severity.LOW), (0.0, Severity.LOW)],
)  # fmt: skip
def test_rating_bands(score: float, severity: Severity) -> None:
    assert severity_from_score(score) is severity


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "is not a CVSS v3 vector"),
        ("CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P", "is not a CVSS v3 vector"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", "lacks base metric(s) A"),
        ("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "invalid value 'X' for AV"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:Q/C:H/I:H/A:H", "invalid value 'Q' for S"),
        ("CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "is not a single METRIC:VALUE"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1", "unknown metric 'ZZ'"),
    ],
)
def test_invalid_vectors(vector: str, message: str) -> None:
    with pytest.raises(CvssError) as raised:
        cvss3_base_score(vector)
    assert message in str(raised.value)
