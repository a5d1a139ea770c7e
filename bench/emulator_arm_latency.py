"""Round-trip time of ARM calls to the local emulator, through the real azure-mgmt SDK over HTTPS.

    python bench/emulator_arm_latency.py [--calls 200]

Starts an emulator (its own process, a temporary state directory), creates a gallery, then times
`calls` sequential SDK calls of the three kinds a release makes all the time: a resource GET
(galleries.get), a list (galleries.list_by_resource_group) and a write polled to its end as a
long-running operation (galleries.begin_update). Every emulator answer is on the path of a release
step, so their latency adds up to how long a rollback or a canary check takes here.

Prints one JSON object as its last line and writes it to bench/results/emulator_arm_latency.json.
Target: p50 of each kind at most 10 ms (a TCP stall, such as Nagle meeting delayed ACKs, costs ~40 ms).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "emulator_arm_latency.json"
TARGET_P50_MS = 10.0
RESOURCE_GROUP = "bench"
GALLERY = "bench_gallery"


def timed(call: Callable[[], Any], calls: int) -> dict[str, float]:
    from switchyard.core.stats import nearest_rank_percentile

    call()  # the connection and TLS session are set up once, as in a long-running flow
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(nearest_rank_percentile(samples, 0.99) or 0.0, 2),
        "mean_ms": round(statistics.fmean(samples), 2),
    }


def bench(calls: int) -> dict[str, object]:
    from switchyard_emulator.testing import run_emulator

    with tempfile.TemporaryDirectory(prefix="arm-bench-") as state, run_emulator(Path(state)) as emulator:
        clients = emulator.clients()
        try:
            clients.resource.resource_groups.create_or_update(RESOURCE_GROUP, {"location": "westeurope"})
            gallery = clients.compute.galleries.begin_create_or_update(
                RESOURCE_GROUP, GALLERY, {"location": "westeurope"}
            ).result()

            kinds = {
                "get": lambda: clients.compute.galleries.get(RESOURCE_GROUP, GALLERY),
                "list": lambda: list(clients.compute.galleries.list_by_resource_group(RESOURCE_GROUP)),
                "update": lambda: clients.compute.galleries.begin_update(
                    RESOURCE_GROUP, GALLERY, {"tags": {"bench": str(time.time_ns())}}
                ).result(),
            }
            results = {kind: timed(call, calls) for kind, call in kinds.items()}
        finally:
            clients.close()
    assert gallery.name == GALLERY
    return {
        "benchmark": "emulator_arm_latency",
        "calls_per_kind": calls,
        **results,
        "target_p50_ms": TARGET_P50_MS,
        "meets_target": all(r["p50_ms"] <= TARGET_P50_MS for r in results.values()),
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    result = bench(args.calls)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
