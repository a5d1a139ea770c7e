"""Shared values and helpers of the image pipeline's integration tests (not fixtures: see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from switchyard.core.versions import ImageVersion
from switchyard.images.local_image import LocalImageRequest

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "images"
SAMPLE_APP = REPO_ROOT / "apps" / "sample"
VULNERABLE_APP = FIXTURES / "apps" / "vulnerable"
BUILT_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
COMMIT = "0123abcd0123abcd0123abcd0123abcd0123abcd"


def request_for(app_dir: Path, output_dir: Path, **changes: object) -> LocalImageRequest:
    values: dict[str, object] = {
        "service": "sample",
        "app_dir": app_dir,
        "version": ImageVersion.of("debian-12", "2026.11", "1.4.2"),
        "git_commit": COMMIT,
        "output_dir": output_dir,
        "built_at": BUILT_AT,
    }
    values.update(changes)
    return LocalImageRequest.model_validate(values)
