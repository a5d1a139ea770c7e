"""The data sets the tests read. All of them live in the repository, each with its licence and
provenance (docs/decisions/0008-the-repository-stands-on-its-own.md).

The PyPA advisory snapshot is the scanner's package data, not a test fixture: tests read it from
switchyard.images.vulndb, the copy the product ships. (This module imports nothing from switchyard,
so the emulator's tests can use it too.)
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
# Azure/azure-rest-api-specs examples (MIT): the emulator's contract test vectors.
AZURE_REST_EXAMPLES = FIXTURES / "azure-rest-examples"
# Trivy JSON reports (Apache-2.0 upstream goldens + reports generated for this project).
TRIVY_REPORTS = FIXTURES / "trivy-reports"
