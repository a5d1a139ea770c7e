"""Seconds spent in each step of the image pipeline for the sample service, and whose seconds they are.

    python bench/image_pipeline.py

Runs the real image-pipeline flow (real Packer, real Trivy, the OSV matcher, the emulator's gallery
over HTTPS) on an in-process Prefect test API and a fresh emulator, then reads each task run's
duration back from Prefect. Time spent in Packer's process and in the scanners (Trivy's process, the
OSV matcher) is measured separately, so "switchyard's own work" is the pipeline's time minus Packer,
the scanners, the cloud's replication wait and Prefect's API retries: version resolution, validation
around Packer, unpacking, the gate, tags, and Prefect's orchestration of the tasks.

Prefect's API retries: the test API keeps its data in SQLite, which takes one writer at a time, and
Prefect answers 503 when a write finds the database busy (its server's own background writers hold
it often); its client waits about 2 s and tries again. In about half the runs one of those lands on
the flow's path (mostly the image-build lock's `increment-with-lease`), so the bench counts the
waits of the requests the flow waits for (every request but the log shipper's) and reports them
apart, as `prefect_api_retry_wait_s`, rather than as switchyard's work or as noise.

Prints one JSON object as its last line and writes it to bench/results/image_pipeline.json.
Targets: the whole pipeline under 30 s; switchyard's own work under 3 s.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "image_pipeline.json"
TARGET_TOTAL_S = 30.0
TARGET_OWN_S = 3.0
STEPS = {
    "resolve image version": "resolve",
    "validate build inputs": "validate",
    "build image with Packer": "build",
    "scan image": "scan",
    "scan gate": "gate",
    "publish to the gallery": "publish",
}


class Stopwatch:
    """Accumulates the time spent in the wrapped calls (the external processes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: type, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


class ApiRetryWaits:
    """Seconds Prefect's clients slept before retrying a request the flow waited for.

    Prefect's client (sync and async) calls `_record_if_maintenance_backoff` with the wait right
    before it sleeps; the log shipper's `/logs/` posts are left out, as they never hold the flow up."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.retries = 0

    def install(self) -> None:
        import prefect.client.base as client_base

        original = client_base._record_if_maintenance_backoff

        def counted(response: Any, exc_info: Any, retry_seconds: float) -> Any:
            request = getattr(response, "request", None)
            if request is None or not str(request.url.path).rstrip("/").endswith("/logs"):
                self.seconds += retry_seconds
                self.retries += 1
            return original(response, exc_info, retry_seconds)

        client_base._record_if_maintenance_backoff = counted


def main() -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from blocks.seed import seed_blocks
    from switchyard.checkout import checkout_fleet
    from switchyard.cloud.azure import AzureGallery
    from switchyard.images.packer import PackerRunner
    from switchyard.images.scanners.osv import OsvScanner
    from switchyard.images.scanners.trivy import TrivyScanner
    from switchyard_emulator.testing import run_emulator

    watch = Stopwatch()
    watch.wrap(PackerRunner, "run", "packer")
    watch.wrap(TrivyScanner, "_run", "trivy")
    watch.wrap(OsvScanner, "__init__", "osv")  # loading the advisory database is the matcher's work too
    watch.wrap(OsvScanner, "scan", "osv")
    watch.wrap(AzureGallery, "publish", "gallery_publish")
    api_retries = ApiRetryWaits()
    api_retries.install()

    with tempfile.TemporaryDirectory(prefix="bench-image-") as scratch:
        os.environ["SWITCHYARD_STATE_DIR"] = str(Path(scratch) / "state")
        with (
            run_emulator(Path(scratch) / "emulator", extra_args=["--lro-retry-after", "0"]) as emulator,
            prefect_test_harness(server_startup_timeout=120),
        ):
            fleet = checkout_fleet()
            for name, environment in fleet.environments.items():
                fleet.environments[name] = environment.model_copy(
                    update={"emulator_file": str(emulator.state_dir / "emulator.json"), "target_regions": []}
                )
            # The default scan policy already reads the advisory snapshot switchyard ships.
            asyncio.run(seed_blocks(fleet))

            from flows.image_pipeline import image_pipeline

            started = time.perf_counter()
            state = image_pipeline(service="sample", app_version="1.0.0", git_commit=None, return_state=True)
            total = time.perf_counter() - started
            published = state.result()
            with get_client(sync_client=True) as client:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
                )
    steps = {STEPS[run.name.rsplit("-", 1)[0]]: run.total_run_time.total_seconds() for run in runs
             if run.name.rsplit("-", 1)[0] in STEPS}  # fmt: skip
    external = sum(watch.seconds.get(name, 0.0) for name in ("packer", "trivy", "osv"))
    own = total - external - watch.seconds.get("gallery_publish", 0.0) - api_retries.seconds
    result = {
        "benchmark": "image_pipeline",
        "gallery_version": published.gallery_version,
        "total_s": round(total, 3),
        "steps_s": {name: round(seconds, 3) for name, seconds in steps.items()},
        "packer_process_s": round(watch.seconds.get("packer", 0.0), 3),
        "trivy_process_s": round(watch.seconds.get("trivy", 0.0), 3),
        "osv_matcher_s": round(watch.seconds.get("osv", 0.0), 3),
        "gallery_publish_s": round(watch.seconds.get("gallery_publish", 0.0), 3),
        "prefect_api_retries": api_retries.retries,
        "prefect_api_retry_wait_s": round(api_retries.seconds, 3),
        "switchyard_own_s": round(own, 3),
        "targets": {"total_s": TARGET_TOTAL_S, "switchyard_own_s": TARGET_OWN_S},
        "meets_targets": total <= TARGET_TOTAL_S and own <= TARGET_OWN_S,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
