"""The sample service's integration tests, run by switchyard against the new color before users.

switchyard runs this (ServiceConfig.integration_test in deployments/fleet.yaml) with
SWITCHYARD_TEST_URL, the gateway's test listener in front of the new color only, and
SWITCHYARD_IMAGE_VERSION, the image being released. Standard library only: it runs on the worker.
Exit code 0 passes; anything else stops the release before any user request reaches the new color.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = 5.0


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            return answer.status, answer.read(), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, error.read(), {k.lower(): v for k, v in error.headers.items()}


def main() -> int:
    base = os.environ["SWITCHYARD_TEST_URL"].rstrip("/")
    image = os.environ["SWITCHYARD_IMAGE_VERSION"]
    failures: list[str] = []

    status, body, _ = get(f"{base}/version")
    served = json.loads(body).get("gallery_version") if status == 200 else None
    if served != image:
        failures.append(f"/version: status {status}, image {served!r}, expected {image!r}")

    for payload in ("hello", "ünïcode", "x" * 2048):
        query = "say=" + urllib.parse.quote(payload)
        status, body, headers = get(f"{base}/work/echo?{query}")
        if status != 200:
            failures.append(f"/work/echo: status {status}")
            continue
        if headers.get("x-image-version") != image:
            failures.append(f"/work/echo answered by {headers.get('x-image-version')!r}, expected {image!r}")
        if json.loads(body).get("query") != query:
            failures.append(f"/work/echo did not echo a {len(payload)}-character query back")

    status, _, _ = get(f"{base}/no/such/path")
    if status != 404:
        failures.append(f"an unknown path answered {status}, not 404")

    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"integration: {len(failures)} failure(s) in 5 checks against {base}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
