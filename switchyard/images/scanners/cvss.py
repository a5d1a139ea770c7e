"""CVSS v3.x base scores from vector strings (FIRST's CVSS v3.1 specification, section 7)."""

from __future__ import annotations

import math

from switchyard.core.findings import Severity

_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
# Privileges Required weighs more when the scope changes.
_PRIVILEGES_REQUIRED = {
    "U": {"N": 0.85, "L": 0.62, "H": 0.27},
    "C": {"N": 0.85, "L": 0.68, "H": 0.5},
}
_BASE_METRICS = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")
# Temporal and environmental metrics may follow; they do not change the base score.
_OTHER_METRICS = {
    "E", "RL", "RC", "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA",
}  # fmt: skip


class CvssError(ValueError):
    """A CVSS vector that is not a valid CVSS v3.0/v3.1 vector."""


def _roundup(value: float) -> float:
    """The specification's Roundup: the smallest one-decimal number >= value, float-safe."""
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled / 100_000
    return (math.floor(scaled / 10_000) + 1) / 10.0


def _parse(vector: str) -> dict[str, str]:
    parts = vector.strip().split("/")
    if not parts or parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        raise CvssError(f"{vector!r} is not a CVSS v3 vector (it must start with CVSS:3.0/ or CVSS:3.1/)")
    metrics: dict[str, str] = {}
    for part in parts[1:]:
        name, separator, value = part.partition(":")
        if not separator or name in metrics:
            raise CvssError(f"{vector!r}: {part!r} is not a single METRIC:VALUE")
        if name not in _BASE_METRICS and name not in _OTHER_METRICS:
            raise CvssError(f"{vector!r}: unknown metric {name!r}")
        metrics[name] = value
    missing = [name for name in _BASE_METRICS if name not in metrics]
    if missing:
        raise CvssError(f"{vector!r} lacks base metric(s) {', '.join(missing)}")
    return metrics


def cvss3_base_score(vector: str) -> float:
    metrics = _parse(vector)

    def weight(name: str, table: dict[str, float]) -> float:
        value = metrics[name]
        if value not in table:
            raise CvssError(f"{vector!r}: invalid value {value!r} for {name}")
        return table[value]

    scope = metrics["S"]
    if scope not in _PRIVILEGES_REQUIRED:
        raise CvssError(f"{vector!r}: invalid value {scope!r} for S")
    attack_vector = weight("AV", _WEIGHTS["AV"])
    complexity = weight("AC", _WEIGHTS["AC"])
    privileges = weight("PR", _PRIVILEGES_REQUIRED[scope])
    interaction = weight("UI", _WEIGHTS["UI"])
    confidentiality = weight("C", _WEIGHTS["C"])
    integrity = weight("I", _WEIGHTS["I"])
    availability = weight("A", _WEIGHTS["A"])
    impact_sub_score = 1 - (1 - confidentiality) * (1 - integrity) * (1 - availability)
    if scope == "U":
        impact = 6.42 * impact_sub_score
    else:
        impact = 7.52 * (impact_sub_score - 0.029) - 3.25 * (impact_sub_score - 0.02) ** 15
    exploitability = 8.22 * attack_vector * complexity * privileges * interaction
    if impact <= 0:
        return 0.0
    if scope == "U":
        return _roundup(min(impact + exploitability, 10))
    return _roundup(min(1.08 * (impact + exploitability), 10))


def severity_from_score(score: float) -> Severity:
    """CVSS v3 qualitative rating; "None" (0.0) is reported as LOW, the mildest switchyard has."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    return Severity.LOW
