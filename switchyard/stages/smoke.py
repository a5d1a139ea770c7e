"""Smoke tests through the gateway's test listener, before any user traffic.

The test listener balances round robin over the new color's instances, so asking k times per
instance reaches each of them k times: health twice, the served version once, and each of the
release policy's checks once (a check is a promise every instance keeps).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from pydantic import BaseModel

from switchyard.core.rollout import HttpCheck


class SmokeResult(BaseModel):
    passed: list[str]  # what was checked and held, for the timeline
    failures: list[str]  # every failed request, in the order they were made

    @property
    def ok(self) -> bool:
        return not self.failures


def run_smoke_tests(
    base_url: str,
    *,
    instances: int,
    health_path: str,
    image_version: str,
    checks: Sequence[HttpCheck] = (),
    timeout_s: float = 5.0,
) -> SmokeResult:
    """Ask `base_url` (the test listener) what every one of `instances` instances must answer."""
    failures: list[str] = []
    passed: list[str] = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        for _ in range(2 * instances):
            try:
                response = http.get(health_path)
                if response.status_code != 200:
                    failures.append(f"GET {health_path} -> {response.status_code}")
            except httpx.HTTPError as error:
                failures.append(f"GET {health_path} -> {type(error).__name__}: {error}")
        passed.append(f"{2 * instances}x GET {health_path}")
        for _ in range(instances):
            try:
                served = http.get("/version").json().get("gallery_version")
            except (httpx.HTTPError, ValueError) as error:
                failures.append(f"GET /version -> {error}")
                continue
            if served != image_version:
                failures.append(f"GET /version served {served!r}, expected {image_version}")
        passed.append(f"/version serves {image_version}")
        for check in [c for c in checks for _ in range(instances)]:
            try:
                response = http.request(check.method, check.path)
            except httpx.HTTPError as error:
                failures.append(f"{check.method} {check.path} -> {error}")
                continue
            if response.status_code != check.expect_status:
                failures.append(
                    f"{check.method} {check.path} -> {response.status_code}, expected {check.expect_status}"
                )
            elif check.expect_body_contains and check.expect_body_contains not in response.text:
                failures.append(f"{check.method} {check.path}: body lacks {check.expect_body_contains!r}")
            else:
                passed.append(f"{check.method} {check.path} -> {check.expect_status}")
    return SmokeResult(passed=passed, failures=failures)
