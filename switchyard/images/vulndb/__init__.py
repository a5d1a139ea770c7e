"""The vulnerability data switchyard ships with: a snapshot of the PyPA advisory database (OSV).

It is package data (see osv-pypi/README.md for its provenance and licence, osv-pypi/snapshot.json
for its commit and date), so the demo's scan policy and the tests read the same copy whether
switchyard runs from a checkout or is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

PYPA_OSV_SNAPSHOT = Path(__file__).resolve().parent / "osv-pypi"
# The folder of advisories an OsvScanner (scan policy `osv_databases`) reads.
PYPA_OSV = PYPA_OSV_SNAPSHOT / "vulns"


def pypa_snapshot_manifest() -> dict[str, object]:
    """The snapshot's upstream, commit, date, licence and advisory counts (osv-pypi/snapshot.json)."""
    return dict(json.loads((PYPA_OSV_SNAPSHOT / "snapshot.json").read_text()))
