"""Image scanners: Trivy (secrets, misconfigurations, vulnerabilities with a database) and the offline
OSV matcher for the image's pinned Python dependencies. Each implements ``Scanner``."""

from switchyard.images.scanners.base import ScanError, Scanner
from switchyard.images.scanners.osv import OsvDatabase, OsvDatabaseError, OsvScanner
from switchyard.images.scanners.requirements import RequirementsError, parse_requirements
from switchyard.images.scanners.trivy import (
    TrivyConfig,
    TrivyDatabaseMissingError,
    TrivyError,
    TrivyReportError,
    TrivyScanner,
    find_trivy,
    parse_trivy_report,
)

__all__ = [
    "OsvDatabase",
    "OsvDatabaseError",
    "OsvScanner",
    "RequirementsError",
    "ScanError",
    "Scanner",
    "TrivyConfig",
    "TrivyDatabaseMissingError",
    "TrivyError",
    "TrivyReportError",
    "TrivyScanner",
    "find_trivy",
    "parse_requirements",
    "parse_trivy_report",
]
