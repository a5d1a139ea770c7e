"""The local demo: the whole path under steady synthetic traffic, on the stack `switchyard up` runs.

publish and release v1 -> release a good v2 by canary -> build a v3 with a fault profile (20% errors)
and watch it be rolled back automatically. Every run is a real Prefect flow run on the stack's
server, so the UI shows the runs, their artifacts and events afterwards.

Traffic starts as soon as something serves production: on a fresh stack that is after v1 (a first
release has nobody to keep serving), on a stack that ran the demo before it is before v1.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from blocks import load_environment, load_service
from switchyard.cloud.factory import cloud_for
from switchyard.console import quiet_console_tracebacks
from switchyard.core.config import FaultProfile, ServiceContext
from switchyard.core.outcomes import ReleaseFailed, ReleaseRefused
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.rollout import Strategy
from switchyard.runbooks import load_flow
from switchyard.stages.traffic import SteadyTraffic

SERVICE = "sample"
ENVIRONMENT = "production"


class ReleaseOutcome(BaseModel):
    name: str
    image_version: str
    strategy: str
    outcome: str
    requests_sent: int
    requests_failed: int
    # Which version answered the failed requests: a bad image's own errors, or lost traffic ("no answer").
    failed_by_version: dict[str, int] = {}
    seconds_from_verdict_to_restored: float | None = None
    detail: str = ""


class DemoReport(BaseModel):
    service: str
    environment: str
    traffic_rate: float
    releases: list[ReleaseOutcome]

    def text(self) -> str:
        lines = [
            f"switchyard demo: {self.service} in {self.environment} under ~{self.traffic_rate:.0f} requests/s",
            "",
            f"{'release':<10} {'image':<22} {'strategy':<11} {'outcome':<12} {'sent':>6} {'failed':>6}  restored",
        ]
        for r in self.releases:
            restored = (
                f"{r.seconds_from_verdict_to_restored:.2f} s" if r.seconds_from_verdict_to_restored is not None else "-"
            )
            lines.append(
                f"{r.name:<10} {r.image_version:<22} {r.strategy:<11} {r.outcome:<12} "
                f"{r.requests_sent:>6} {r.requests_failed:>6}  {restored}"
            )
        return "\n".join(lines)


def _commit(repo: Path) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        # Not a git checkout: the image pipeline refuses to build and says why (it builds commits only).
        return None


def _serves_production() -> bool:
    """Whether the production listener has something behind it: its live color runs instances."""
    context = ServiceContext(environment=load_environment(ENVIRONMENT), service=load_service(SERVICE))
    observed = cloud_for(context).observe(context.topology)
    live = observed.live_color
    return live is not None and bool(observed.scale_set(live).instances)


def run_demo(repo: Path, *, rate: float = 120.0, say: Callable[[str], None] = print) -> DemoReport:
    image_pipeline, release = load_flow("image-pipeline"), load_flow("release")
    quiet_console_tracebacks()  # v3 is meant to roll back: its outcome line says so, not a traceback
    service = load_service(SERVICE)
    port = service.ports_in(ENVIRONMENT).production
    commit = _commit(repo)
    outcomes: list[ReleaseOutcome] = []

    say("building images: v1 and v2 (good), v3 (built with 20% errors on purpose)")
    v1 = image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=commit).gallery_version
    v2 = image_pipeline(service=SERVICE, app_version="2.0.0", git_commit=commit).gallery_version
    # A fresh v3 each time (force): the last demo's v3 was rolled back and is never released again.
    v3 = image_pipeline(
        service=SERVICE,
        app_version="3.0.0",
        git_commit=commit,
        fault_profile=FaultProfile(error_rate=0.2),
        force=True,
    ).gallery_version

    with contextlib.ExitStack() as running:
        traffic: SteadyTraffic | None = None
        for name, version, strategy in (
            ("v1", v1, Strategy.BLUE_GREEN),
            ("v2", v2, Strategy.CANARY),
            ("v3", v3, Strategy.CANARY),
        ):
            if traffic is None and _serves_production():
                traffic = running.enter_context(SteadyTraffic("127.0.0.1", port, rate=rate, connections=8))
            elif traffic is None:
                say(f"nothing serves {SERVICE} in {ENVIRONMENT} yet: traffic starts once {name} is live")
            say(f"releasing {name} ({version}) by {strategy.value}" + (" under steady traffic" if traffic else ""))
            started = time.time()
            try:
                summary: ReleaseSummary | None = release(
                    service=SERVICE, environment=ENVIRONMENT, image_version=version, strategy=strategy
                )
            except ReleaseFailed as failure:
                summary = failure.summary
            except ReleaseRefused as refusal:
                say(f"  {name}: refused: {refusal}")
                summary = None
            ended = time.time()
            sent = failed = 0
            failed_by_version: dict[str, int] = {}
            restored = None
            last_bad = None
            if traffic is not None:
                time.sleep(0.5)  # answers still in flight at the end belong to this release
                report = traffic.report()
                during = report.between(started, ended)
                sent, failed = during.sent, during.failed
                failed_by_version = dict(during.failed_by_version)
                last_bad = report.last_answer_from(version)
            if summary is not None and summary.failed_verdict_at is not None:
                verdict = summary.failed_verdict_at.timestamp()
                candidates = [summary.seconds_to_restore or 0.0]
                if last_bad is not None:
                    candidates.append(last_bad - verdict)
                restored = max(0.0, *candidates)
            outcome = ReleaseOutcome(
                name=name,
                image_version=version,
                strategy=strategy.value,
                outcome=summary.outcome if summary else "failed",
                requests_sent=sent,
                requests_failed=failed,
                failed_by_version=failed_by_version,
                seconds_from_verdict_to_restored=restored,
                detail=summary.outcome_detail if summary else "",
            )
            outcomes.append(outcome)
            measured = f"{failed} of {sent} requests failed" if traffic else "no traffic yet"
            say(f"  {name}: {outcome.outcome}; {measured}")
    return DemoReport(service=SERVICE, environment=ENVIRONMENT, traffic_rate=rate, releases=outcomes)
