"""The local demo: the whole path under steady synthetic traffic, on the stack `switchyard up` runs.

For the sample: publish and release v1 -> release a good v2 by canary (its expand migration runs
first, as the sample's pre_deploy hook) -> flip a feature flag on and off with no deploy -> build a
v3 with a fault profile (20% errors) and watch it be rolled back automatically. Then the fleet's
second service, catalog (another app, port and health path), is built and released. Every run is a
real Prefect flow run on the stack's server, so the UI shows the runs, artifacts and events.

Traffic starts as soon as something serves production: on a fresh stack that is after v1 (a first
release has nobody to keep serving), on a stack that ran the demo before it is before v1.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel

from blocks import load_environment, load_service
from switchyard.cloud.factory import cloud_for
from switchyard.console import quiet_console_tracebacks
from switchyard.core.config import FaultProfile, ServiceContext
from switchyard.core.outcomes import ReleaseFailed, ReleaseRefused
from switchyard.core.release_report import ReleaseStage, ReleaseSummary
from switchyard.core.rollout import Strategy
from switchyard.runbooks import load_flow
from switchyard.stages.traffic import SteadyTraffic

SERVICE = "sample"
SECOND_SERVICE = "catalog"
ENVIRONMENT = "production"
FLAG = "new_greeting"  # what the sample's /work/greeting reads (apps/sample/app/flags.py)
FLAG_TIMEOUT_S = 10.0


class FlagFlip(BaseModel):
    """A feature flag turned on and off again on the live version: behaviour changes, no deploy."""

    service: str
    flag: str
    answer_before: str
    answer_when_on: str
    answer_when_off: str
    seconds_to_take_effect: float
    seconds_to_revert: float
    image_version: str  # what production served throughout: the same image before, during and after


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
    stages: list[ReleaseStage] = []  # hooks, test stages, canary verdicts, the release: in order


class ServiceDemo(BaseModel):
    service: str
    releases: list[ReleaseOutcome]


class DemoReport(BaseModel):
    environment: str
    traffic_rate: float
    services: list[ServiceDemo]
    flag_flip: FlagFlip | None = None

    def text(self) -> str:
        lines = [
            f"switchyard demo: {', '.join(s.service for s in self.services)} in {self.environment}, the sample "
            f"under ~{self.traffic_rate:.0f} requests/s",
            "",
            f"{'service':<9} {'release':<8} {'image':<22} {'strategy':<11} {'outcome':<12} {'sent':>6} {'failed':>6}"
            "  restored",
        ]
        for service in self.services:
            for r in service.releases:
                restored = (
                    f"{r.seconds_from_verdict_to_restored:.2f} s"
                    if r.seconds_from_verdict_to_restored is not None
                    else "-"
                )
                lines.append(
                    f"{service.service:<9} {r.name:<8} {r.image_version:<22} {r.strategy:<11} {r.outcome:<12} "
                    f"{r.requests_sent:>6} {r.requests_failed:>6}  {restored}"
                )
                stages = ", ".join(f"{st.name}: {st.outcome}" for st in r.stages if st.name != "release")
                if stages:
                    lines.append(f"{'':<18} stages: {stages}")
        if self.flag_flip is not None:
            flip = self.flag_flip
            lines += [
                "",
                f"flag {flip.flag} of {flip.service}: on in {flip.seconds_to_take_effect:.2f} s "
                f"({flip.answer_before!r} -> {flip.answer_when_on!r}), off again in {flip.seconds_to_revert:.2f} s, "
                f"no deploy (production served {flip.image_version} throughout)",
            ]
        return "\n".join(lines)


def _commit(repo: Path) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        # Not a git checkout: the image pipeline refuses to build and says why (it builds commits only).
        return None


def _serves_production(service: str) -> bool:
    """Whether the production listener has something behind it: its live color runs instances."""
    context = ServiceContext(environment=load_environment(ENVIRONMENT), service=load_service(service))
    observed = cloud_for(context).observe(context.topology)
    live = observed.live_color
    return live is not None and bool(observed.scale_set(live).instances)


def _release(
    release: Callable[..., ReleaseSummary],
    service: str,
    name: str,
    version: str,
    strategy: Strategy,
    traffic: SteadyTraffic | None,
    say: Callable[[str], None],
) -> ReleaseOutcome:
    say(f"releasing {service} {name} ({version}) by {strategy.value}" + (" under steady traffic" if traffic else ""))
    started = time.time()
    try:
        summary: ReleaseSummary | None = release(
            service=service, environment=ENVIRONMENT, image_version=version, strategy=strategy
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
    report = None
    if traffic is not None:
        time.sleep(0.5)  # answers still in flight at the end belong to this release
        report = traffic.report()
        during = report.between(started, ended)
        sent, failed = during.sent, during.failed
        failed_by_version = dict(during.failed_by_version)
    if summary is not None and summary.failed_verdict_at is not None:
        # Restored: the flow's own account of the rollback, or the bad version's last answer
        # after the verdict, whichever came later.
        back = report.around_verdict(version, summary.failed_verdict_at.timestamp())[1] if report else None
        restored = max(summary.seconds_to_restore or 0.0, back or 0.0)
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
        stages=summary.stages() if summary else [],
    )
    measured = f"{failed} of {sent} requests failed" if traffic else "no traffic yet"
    say(f"  {name}: {outcome.outcome}; {measured}")
    for stage in outcome.stages:
        if stage.name != "release":
            say(f"    {stage.name}: {stage.outcome}")
    return outcome


def _greeting(port: int) -> tuple[str, str]:
    """(greeting, image version) as production answers /work/greeting now."""
    answer = httpx.get(f"http://127.0.0.1:{port}/work/greeting", timeout=5)
    answer.raise_for_status()
    return str(answer.json()["greeting"]), answer.headers.get("X-Image-Version", "")


def _flip_flag(port: int, say: Callable[[str], None]) -> FlagFlip:
    """Turn the sample's flag on, see production's answer change, turn it off, see it change back."""
    set_flag = load_flow("set-flag")
    before, image = _greeting(port)
    timings: list[float] = []
    answers: list[str] = []
    for enabled in (True, False):
        say(f"flag {FLAG} of {SERVICE} in {ENVIRONMENT}: {'on' if enabled else 'off'}")
        set_flag(service=SERVICE, environment=ENVIRONMENT, name=FLAG, enabled=enabled)
        flipped_at = time.monotonic()
        while True:
            answer, served_by = _greeting(port)
            if served_by != image:
                raise RuntimeError(f"production moved from {image} to {served_by} during the flag flip")
            if (answer != before) == enabled:
                break
            if time.monotonic() - flipped_at > FLAG_TIMEOUT_S:
                raise RuntimeError(f"flag {FLAG} did not take effect within {FLAG_TIMEOUT_S:.0f} s: still {answer!r}")
            time.sleep(0.05)
        timings.append(time.monotonic() - flipped_at)
        answers.append(answer)
        say(f"  production answers {answer!r} after {timings[-1]:.2f} s, still {image}")
    return FlagFlip(
        service=SERVICE,
        flag=FLAG,
        answer_before=before,
        answer_when_on=answers[0],
        answer_when_off=answers[1],
        seconds_to_take_effect=timings[0],
        seconds_to_revert=timings[1],
        image_version=image,
    )


def run_demo(repo: Path, *, rate: float = 120.0, say: Callable[[str], None] = print) -> DemoReport:
    image_pipeline, release = load_flow("image-pipeline"), load_flow("release")
    quiet_console_tracebacks()  # v3 is meant to roll back: its outcome line says so, not a traceback
    port = load_service(SERVICE).ports_in(ENVIRONMENT).production
    commit = _commit(repo)
    outcomes: list[ReleaseOutcome] = []
    flip: FlagFlip | None = None

    say(f"building images of {SERVICE}: v1 and v2 (good), v3 (built with 20% errors on purpose)")
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
            if traffic is None and _serves_production(SERVICE):
                traffic = running.enter_context(SteadyTraffic("127.0.0.1", port, rate=rate, connections=8))
            elif traffic is None:
                say(f"nothing serves {SERVICE} in {ENVIRONMENT} yet: traffic starts once {name} is live")
            if name == "v3":
                # Feature flags decouple release from deploy: on and off on the live v2, no image moves.
                flip = _flip_flag(port, say)
            outcomes.append(_release(release, SERVICE, name, version, strategy, traffic, say))

    say(f"building and releasing {SECOND_SERVICE}: another app, port and health path, on its own gateway")
    catalog = image_pipeline(service=SECOND_SERVICE, app_version="1.0.0", git_commit=commit).gallery_version
    second = _release(release, SECOND_SERVICE, "v1", catalog, Strategy.BLUE_GREEN, None, say)
    return DemoReport(
        environment=ENVIRONMENT,
        traffic_rate=rate,
        services=[
            ServiceDemo(service=SERVICE, releases=outcomes),
            ServiceDemo(service=SECOND_SERVICE, releases=[second]),
        ],
        flag_flip=flip,
    )
