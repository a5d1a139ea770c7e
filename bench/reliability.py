"""The reliability battery, a quick subset (issue 10): releases under ARM faults, and bad input.

    python bench/reliability.py

Runs the real flows on an emulator of its own (fast profile, in a temporary directory) with an
in-process Prefect test API. v1 is released with no fault; then 10% of ARM calls answer 429 (with
Retry-After), 500 or a second late (the emulator's admin route `PUT /switchyard/faults`), and under
steady user traffic:

* a good v2, by canary, must promote with no failed request;
* a bad v3 (30% errors) must roll back, production back on v2, no request lost.

A scenario converged when it ended as expected with one consistent gateway configuration.
requests_failed_outside_canary counts failed requests not answered by the bad canary's version
(a request nothing answered counts); lost_writes counts differences between the final cloud and
what the release reported (routing vs live_after, the live color's image, the gateway's phase tag,
the image's rolled-back mark or eligibility as latest). For the bad canary, first_bad_to_verdict_s
(its first answer to the failing verdict) and verdict_to_traffic_back_s (the verdict to its last
answer): the fast profile's speeds, which the e2e tests do not assert.

v2 and v3 are built under the same faults (v1 without). Then, faults off, the bad-input battery
through the release flow's parameters (unknown service, environment or policy, a malformed version,
a version not in the gallery, the rolled-back v3, a bad strategy): each must raise a clear error
naming what is wrong and change nothing in the whole cloud state read through the adapter.

Prints one JSON object as its last line and writes it to bench/results/reliability.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "reliability.json"


def main() -> int:
    from battery import (  # bench/battery.py, beside this script
        ARM_FAULTS,
        Battery,
        BatteryResults,
        bad_inputs,
        build_images,
        register_blocks,
        release_under_faults,
        try_bad_input,
    )
    from prefect.testing.utilities import prefect_test_harness

    from blocks.seed import seed_blocks
    from switchyard.checkout import checkout_fleet
    from switchyard_emulator.testing import run_emulator

    started = time.time()
    results = BatteryResults()
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as scratch:
        os.environ["SWITCHYARD_STATE_DIR"] = str(Path(scratch) / "state")
        with (
            run_emulator(Path(scratch) / "emulator", extra_args=["--lro-retry-after", "0"], profile="fast") as emulator,
            prefect_test_harness(server_startup_timeout=120),
        ):
            fleet = checkout_fleet()
            asyncio.run(seed_blocks(fleet))  # the scan policies and recipes the image pipeline reads
            battery = Battery(emulator)
            ports = register_blocks(battery, fleet)
            images, pipeline_faults = build_images(battery, ARM_FAULTS)  # v2 and v3 under faults

            from flows.provision import provision
            from flows.release import release

            provision(service=battery.service, environment=battery.environment)
            release(service=battery.service, environment=battery.environment, image_version=images["v1"])
            results.releases.append(
                release_under_faults(battery, ports, "good v2 under ARM faults", images["v2"], images["v2"], "promoted")
            )
            results.releases.append(
                release_under_faults(
                    battery,
                    ports,
                    "bad v3 under ARM faults",
                    images["v3"],
                    images["v2"],
                    "rolled-back",
                    bad_version=images["v3"],
                )
            )
            for case in bad_inputs(battery, images):
                results.refusals.append(try_bad_input(battery, case, release))

    for scenario in results.releases:
        print(json.dumps(scenario.as_dict()))
    for refusal in results.refusals:
        print(json.dumps({"bad_input": refusal.name, "raised": refusal.raised, "changed": refusal.changed,
                          "clear": refusal.clear, "message": refusal.message[:300]}))  # fmt: skip
    headline = results.headline()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "reliability",
                **headline,
                "scenario_details": [s.as_dict() for s in results.releases],
                "bad_input_details": [
                    {"case": r.name, "raised": r.raised, "clear": r.clear, "changed": r.changed, "message": r.message}
                    for r in results.refusals
                ],
                "image_pipeline_arm_faults_injected": pipeline_faults,
                "seconds": round(time.time() - started, 1),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
        + "\n"
    )
    print(json.dumps(headline))
    perfect = (
        headline["converged"] == headline["scenarios"]
        and headline["requests_failed_outside_canary"] == 0
        and headline["lost_writes"] == 0
        and headline["bad_inputs_refused_cleanly"] == headline["bad_inputs"]
    )
    return 0 if perfect else 1


if __name__ == "__main__":
    raise SystemExit(main())
