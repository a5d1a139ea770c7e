"""A bad canary on Azure's timing: how long users meet it, and what it costs them.

    python bench/azure_profile_release.py [--quick] [--rate 40]

Runs the real release flow on the emulator's `azure` profile (one-minute metric grains published a
minute late, access-log records after an ingestion delay, gateway and scale-set writes of tens of
seconds without Retry-After; --quick shortens the writes and the ingestion delay, keeping the
grains and the metrics' delay), with an in-process Prefect test API. It releases a good v1, then,
under steady traffic, a v3 that answers 30% of its requests with errors, by canary, and measures:

* first_bad_to_verdict_s: from v3's first answer to the failing verdict;
* verdict_to_traffic_back_s: from the verdict to the last answer v3 gave (the gateway write
  that takes the canary out takes as long as a gateway write); both as TrafficReport.around_verdict
  defines them, as bench/reliability.py reports them on the fast profile;
* failed_share: failed requests / requests sent while the bad release ran;
* arm_requests, arm_reads_per_s: the Resource Manager calls the release made (the emulator counts
  them), against Azure's budget of 25 reads a second per principal (the `azure` profile enforces
  it: throttled counts the 429s it answered);
* compute_requests, compute_throttled: the same for Microsoft.Compute's scale-set policies (a GET of
  one scale set: 36, refilled by 12 a minute), by policy;
* log_queries, log_queries_throttled: the Log Analytics queries (the canary's access log), against
  its 200 per user in 30 s, and those refused, by the limit met.

Prints one JSON object as its last line and writes it to bench/results/azure_profile_release.json.
"""

from __future__ import annotations

import argparse
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
RESULTS = REPO / "bench" / "results" / "azure_profile_release.json"
SERVICE, ENV = "sample", "production"
RATE = 40.0  # requests a second to production; --rate: a low-traffic service sends fewer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter writes and log ingestion delay")
    parser.add_argument("--rate", type=float, default=RATE, help="requests a second to production")
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error("--rate must be positive")
    quick, rate = args.quick, args.rate
    from prefect.testing.utilities import prefect_test_harness

    from blocks.seed import seed_blocks
    from switchyard.checkout import checkout_fleet
    from switchyard.core.outcomes import ReleaseFailed
    from switchyard.core.rollout import Strategy
    from switchyard.stages.traffic import SteadyTraffic
    from switchyard_emulator.testing import counts_between, free_port, run_emulator, throttling_status

    timing_args = ["--lro-retry-after", "0", "--metrics-latency", "60"]
    if quick:
        timing_args += ["--log-ingestion-delay", "20", "--gateway-write-seconds", "6", "--scale-set-write-seconds", "6"]
    with tempfile.TemporaryDirectory(prefix="bench-azure-") as scratch:
        os.environ["SWITCHYARD_STATE_DIR"] = str(Path(scratch) / "state")
        with (
            run_emulator(Path(scratch) / "emulator", extra_args=timing_args, profile="azure") as emulator,
            prefect_test_harness(server_startup_timeout=120),
        ):
            fleet = checkout_fleet()
            environment = fleet.environments[ENV].model_copy(
                update={"emulator_file": str(emulator.state_dir / "emulator.json"), "target_regions": []}
            )
            fleet.environments = {ENV: environment}
            ports = (
                fleet.services[SERVICE]
                .frontend_ports[ENV]
                .model_copy(update={"production": free_port(), "test": free_port()})
            )
            fleet.services[SERVICE] = fleet.services[SERVICE].model_copy(
                update={
                    "capacity": 2,
                    "frontend_ports": {ENV: ports},
                    "autoscale": fleet.services[SERVICE].autoscale.model_copy(
                        update={"time_window_s": 300, "cooldown_s": 60}
                    ),
                }
            )
            default = fleet.release_policies["default"]
            fleet.release_policies["default"] = default.model_copy(
                update={
                    "canary_steps": [0.5],
                    "analysis_window_s": 60,
                    "check_interval_s": 5,
                    "promoted_analysis_window_s": 0,
                    "healthy_timeout_s": 180,
                    "slo": default.slo.model_copy(update={"min_requests": 200, "min_latency_samples": 200}),
                }
            )
            asyncio.run(seed_blocks(fleet))

            from flows.image_pipeline import image_pipeline
            from flows.provision import provision
            from flows.release import release
            from switchyard.core.config import FaultProfile

            commit = None  # HEAD: builds take the app from a real commit
            v1 = image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=commit, environment=ENV)
            v3 = image_pipeline(
                service=SERVICE,
                app_version="3.0.0",
                git_commit=commit,
                environment=ENV,
                fault_profile=FaultProfile(error_rate=0.3),
            )
            provision(service=SERVICE, environment=ENV)
            release(service=SERVICE, environment=ENV, image_version=v1.gallery_version, strategy=Strategy.BLUE_GREEN)
            with SteadyTraffic("127.0.0.1", ports.production, rate=rate, connections=4) as load:
                time.sleep(2)
                emulator_file = emulator.state_dir / "emulator.json"
                arm_before = throttling_status(emulator_file)
                started = time.time()
                try:
                    release(service=SERVICE, environment=ENV, image_version=v3.gallery_version)
                    summary = None
                except ReleaseFailed as failure:
                    summary = failure.summary
                ended = time.time()
                arm_after = throttling_status(emulator_file)
                time.sleep(2)
    if summary is None or summary.failed_verdict_at is None:
        print(json.dumps({"benchmark": "azure_profile_release", "error": "the bad release was not rolled back"}))
        return 1
    report = load.report()
    during = report.between(started, ended)
    first_bad, back = report.around_verdict(v3.gallery_version, summary.failed_verdict_at.timestamp())
    result = {
        "benchmark": "azure_profile_release",
        "quick": quick,
        "rate_per_s": rate,
        "outcome": summary.outcome,
        "first_bad_to_verdict_s": round(first_bad, 1) if first_bad is not None else None,
        # Where in the minute v3 first answered: how many of its requests the first grain holds.
        "first_bad_second_of_minute": (
            round((summary.failed_verdict_at.timestamp() - first_bad) % 60, 1) if first_bad is not None else None
        ),
        "verdict_to_traffic_back_s": round(back, 1) if back is not None else None,
        "failed_share": round(during.failed / during.sent, 4) if during.sent else None,
        "requests_sent": during.sent,
        "requests_failed": during.failed,
        "release_s": round(ended - started, 1),
        "arm_requests": {kind: n - arm_before["admitted"][kind] for kind, n in arm_after["admitted"].items()},
        "arm_reads_per_s": round(
            (arm_after["admitted"]["read"] - arm_before["admitted"]["read"]) / (ended - started), 2
        ),
        "throttled": {kind: n - arm_before["throttled"][kind] for kind, n in arm_after["throttled"].items()},
        "compute_requests": counts_between(arm_before["compute"]["admitted"], arm_after["compute"]["admitted"]),
        "compute_throttled": counts_between(arm_before["compute"]["throttled"], arm_after["compute"]["throttled"]),
        "log_queries": arm_after["log_queries"]["admitted"] - arm_before["log_queries"]["admitted"],
        "log_queries_throttled": counts_between(
            arm_before["log_queries"]["throttled"], arm_after["log_queries"]["throttled"]
        ),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
