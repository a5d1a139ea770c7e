"""Trivy JSON reports -> findings, on every real report in tests/fixtures/trivy-reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.core.findings import FindingKind, Severity
from switchyard.images.scanners.trivy import TrivyReportError, parse_trivy_report
from tests.datasets import TRIVY_REPORTS

PIP_TARGET = "demo-image-1.2.3-2024.06.01/opt/app/requirements.txt"
DOCKERFILE = "demo-image-1.2.3-2024.06.01/opt/app/Dockerfile"
HOST_KEYS = ["etc/ssh/ssh_host_ecdsa_key", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_rsa_key"]

# report -> (artifact type, Trivy version,
#            findings as (kind, id, severity, package, installed, fixed, target))
EXPECTED: dict[str, tuple[str, str, list[tuple[str, str, str, str, str, str, str]]]] = {
    "alpine-39-skip.json.golden": ("container_image", "dev", []),
    "amazonlinux2-gp2-x86-vm.json.golden": (
        "vm",
        "dev",
        [("vulnerability", "CVE-2022-38177", "MEDIUM", "bind-export-libs", "32:9.11.4-26.P2.amzn2.5.2",
          "99:9.11.4-26.P2.amzn2.13", "disk.img (amazon 2 (Karoo))")],
    ),
    "legacy-v0.63.0/amazonlinux2-gp2-x86-vm.json.golden": (
        "vm",
        "",
        [("vulnerability", "CVE-2022-38177", "MEDIUM", "bind-export-libs", "32:9.11.4-26.P2.amzn2.5.2",
          "99:9.11.4-26.P2.amzn2.13", "disk.img (amazon 2 (Karoo))")],
    ),
    "pip.json.golden": (
        "repository",
        "dev",
        [
            ("vulnerability", "CVE-2019-14806", "HIGH", "werkzeug", "0.11", "0.15.3", "requirements.txt"),
            ("vulnerability", "CVE-2020-28724", "MEDIUM", "werkzeug", "0.11", "0.11.6", "requirements.txt"),
        ],
    ),
    "secrets.json.golden": (
        "repository",
        "dev",
        [
            ("secret", "aws-access-key-id", "CRITICAL", "", "", "", "deploy.sh"),
            ("secret", "mysecret", "HIGH", "", "", "", "deploy.sh"),
        ],
    ),
    "dockerfile.json.golden": (
        "repository",
        "dev",
        [("misconfiguration", "DS-0002", "HIGH", "", "", "", "Dockerfile")],
    ),
    "legacy-v0.63.0/dockerfile.json.golden": (
        "repository",
        "",
        [("misconfiguration", "DS-0002", "HIGH", "", "", "", "Dockerfile")],
    ),
    "generated-trivy-0.76.0/trivy-0.76.0-fs-vuln-misconfig-secret.json": (
        "filesystem",
        "0.76.0",
        [
            ("vulnerability", "PYSEC-2019-217", "UNKNOWN", "jinja2", "2.10", "2.10.1", PIP_TARGET),
            ("vulnerability", "PYSEC-2021-66", "UNKNOWN", "jinja2", "2.10", "2.11.3", PIP_TARGET),
            ("vulnerability", "PYSEC-2018-28", "UNKNOWN", "requests", "2.19.1", "2.20.0", PIP_TARGET),
            ("vulnerability", "PYSEC-2023-74", "UNKNOWN", "requests", "2.19.1", "2.31.0", PIP_TARGET),
            ("misconfiguration", "DS-0002", "HIGH", "", "", "", DOCKERFILE),
            ("misconfiguration", "DS-0005", "LOW", "", "", "", DOCKERFILE),
            ("misconfiguration", "DS-0026", "LOW", "", "", "", DOCKERFILE),
            ("secret", "github-pat", "CRITICAL", "", "", "", "demo-image-1.2.3-2024.06.01/opt/app/config.py"),
        ],
    ),
    "generated-trivy-0.76.0/trivy-0.76.0-fs-clean.json": ("filesystem", "0.76.0", []),
    "generated-trivy-0.76.0/trivy-0.76.0-vm-raw-packer-qemu-image.json": (
        "vm",
        "0.76.0",
        [("secret", "private-key", "HIGH", "", "", "", key) for key in HOST_KEYS],
    ),
    "generated-trivy-0.76.0/trivy-0.76.0-rootfs-packer-qemu-image.json": (
        "filesystem",
        "0.76.0",
        [("secret", "private-key", "HIGH", "", "", "", key) for key in HOST_KEYS],
    ),
}  # fmt: skip


def load(name: str) -> Any:
    return json.loads((TRIVY_REPORTS / name).read_text())


def test_every_report_is_covered() -> None:
    root = TRIVY_REPORTS
    on_disk = {str(path.relative_to(root)) for path in root.rglob("*") if path.suffix in (".json", ".golden")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_report_findings(name: str) -> None:
    artifact_type, version, expected = EXPECTED[name]
    report = parse_trivy_report(load(name))
    assert report.artifact_type == artifact_type
    assert report.trivy_version == version
    got = [
        (f.kind.value, f.id, f.severity.value, f.package, f.installed_version, f.fixed_version, f.target)
        for f in report.findings
    ]
    assert got == expected


def test_old_and_new_misconfiguration_ids_are_the_same_finding() -> None:
    new = parse_trivy_report(load("dockerfile.json.golden")).findings
    old = parse_trivy_report(load("legacy-v0.63.0/dockerfile.json.golden")).findings
    assert [finding.key for finding in old] == [finding.key for finding in new] == [("misconfiguration", "DS-0002", "")]
    assert set(old[0].aliases) == {"DS002", "AVD-DS-0002"}


def test_secret_findings_never_carry_the_secret() -> None:
    for name in ("secrets.json.golden", "generated-trivy-0.76.0/trivy-0.76.0-fs-vuln-misconfig-secret.json"):
        findings = parse_trivy_report(load(name)).findings
        serialized = json.dumps([finding.model_dump(mode="json") for finding in findings])
        assert "ghp_" not in serialized
        assert "AKIA" not in serialized
        assert "export " not in serialized  # no line of the file at all


def test_passing_misconfiguration_checks_are_not_findings() -> None:
    report = load("dockerfile.json.golden")
    failing = report["Results"][0]["Misconfigurations"][0]
    report["Results"][0]["Misconfigurations"].append({**failing, "ID": "DS-0001", "Status": "PASS"})
    assert [finding.id for finding in parse_trivy_report(report).findings] == ["DS-0002"]


def test_null_result_lists_are_empty() -> None:
    report = load("pip.json.golden")
    report["Results"][0]["Vulnerabilities"] = None
    assert parse_trivy_report(report).findings == []
    report["Results"] = None
    assert parse_trivy_report(report).findings == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda report: [], "a Trivy report is a JSON object"),
        (lambda report: {**report, "SchemaVersion": 1}, "unsupported Trivy report SchemaVersion 1"),
        (lambda report: {k: v for k, v in report.items() if k != "SchemaVersion"}, "SchemaVersion None"),
        (lambda report: {**report, "Results": {"x": 1}}, "'Results' is not a list"),
        (lambda report: {**report, "Results": ["text"]}, r"Results\[0\] is not an object"),
        (
            lambda report: {**report, "Results": [{**report["Results"][0], "Vulnerabilities": "many"}]},
            r"Results\[0\].Vulnerabilities is not a list of objects",
        ),
        (
            lambda report: {
                **report,
                "Results": [{**report["Results"][0], "Vulnerabilities": [{"PkgName": "werkzeug"}]}],
            },
            "a Trivy vulnerability has no VulnerabilityID",
        ),
    ],
)
def test_reports_of_another_shape_are_errors(mutate: Any, message: str) -> None:
    with pytest.raises(TrivyReportError, match=message):
        parse_trivy_report(mutate(load("pip.json.golden")))


def test_unknown_severity_words_become_unknown() -> None:
    report = load("pip.json.golden")
    report["Results"][0]["Vulnerabilities"][0]["Severity"] = "SEVERE"
    del report["Results"][0]["Vulnerabilities"][1]["Severity"]
    severities = [finding.severity for finding in parse_trivy_report(report).findings]
    assert severities == [Severity.UNKNOWN, Severity.UNKNOWN]
    assert all(finding.kind is FindingKind.VULNERABILITY for finding in parse_trivy_report(report).findings)
