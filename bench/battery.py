"""The reliability battery's setup and judgements, shared by tests/e2e/test_arm_faults.py and
bench/reliability.py (issue 10): one service, environment and release policy of its own on an
emulator of its own, ARM faults switched on at runtime through the emulator's admin route, releases
under steady user traffic, and what the cloud shows afterwards, read through switchyard's adapter.

The emulator is the judge: nothing here is mocked; the release flow runs as it does in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.exceptions import ParameterTypeError

from blocks import (
    AzureEnvironmentBlock,
    ReleasePolicyBlock,
    ServiceBlock,
    UnknownNameError,
    load_environment,
    load_release_policy,
    load_service,
)
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import FaultProfile, FrontendPorts, ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.hooks import ReleaseHooks
from switchyard.core.outcomes import ReleaseFailed, ReleaseRefused
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, Phase, Strategy
from switchyard.core.state import ServiceObservation
from switchyard.core.topology import Color, Topology
from switchyard.stages.traffic import NO_ANSWER, SteadyTraffic, TrafficReport
from switchyard_emulator.faults import FaultConfig
from switchyard_emulator.testing import EmulatorHandle, free_port

RATE = 40.0  # user requests per second while a release runs
# None: the build takes HEAD (git archive of the commit); a made-up id would be refused.
COMMIT: str | None = None
BAD_ERROR_RATE = 0.3  # the bad version answers this share of its requests with 500
# What the issue asks for: 10% of ARM calls answer 429 (Retry-After), 500, or a second late.
ARM_FAULTS = FaultConfig(rate=0.1, kinds=["429", "500", "slow"], seed=1015, slow_seconds=1.0, retry_after_seconds=1)
NO_FAULTS = FaultConfig(rate=0.0)


@dataclass(frozen=True)
class Battery:
    """The names one battery owns (its blocks, its resource groups) on its own emulator."""

    emulator: EmulatorHandle
    service: str = "flaky"
    environment: str = "faultycloud"
    policy: str = "arm-faults"

    def context(self) -> ServiceContext:
        return ServiceContext(environment=load_environment(self.environment), service=load_service(self.service))


def register_blocks(battery: Battery, fleet: Fleet) -> FrontendPorts:
    """The battery's environment, service (the sample app, 2 instances) and canary policy as blocks,
    derived from the fleet's production environment, sample service and default policy."""
    production = fleet.environments["production"]
    AzureEnvironmentBlock(
        **production.model_copy(
            update={
                "name": battery.environment,
                "resource_group": f"switchyard-{battery.environment}",
                "gallery_resource_group": f"switchyard-{battery.environment}-images",
                "target_regions": [],
                "emulator_file": str(battery.emulator.state_dir / "emulator.json"),
                "release_policy": battery.policy,
            }
        ).model_dump()
    ).save(battery.environment, overwrite=True)
    ports = FrontendPorts(production=free_port(), test=free_port())
    sample = fleet.services["sample"]
    # Without the sample's database and migration hooks, as the e2e fleet has it: the battery's
    # environment has no database (the checkout's fleet names one per environment of its own), and
    # what is judged here is releases under faults, not migrations (test_expand_contract.py's).
    ServiceBlock(
        **sample.model_copy(
            update={
                "name": battery.service,
                "capacity": 2,
                "frontend_ports": {battery.environment: ports},
                "hooks": ReleaseHooks(),
                "database": {},
            }
        ).model_dump()
    ).save(battery.service, overwrite=True)
    default = fleet.release_policies["default"]
    ReleasePolicyBlock(
        **default.model_copy(
            update={
                "strategy": Strategy.CANARY,
                "canary_steps": [0.5],
                "analysis_window_s": 6,
                "check_interval_s": 0.5,
                "promoted_analysis_window_s": 3,
                "scale_down_delay_s": 1,
                "healthy_timeout_s": 120,
                "min_ready_s": 3,
                "split_tolerance": 0.15,
                "slo": default.slo.model_copy(update={"min_requests": 40, "min_latency_samples": 40}),
            }
        ).model_dump()
    ).save(battery.policy, overwrite=True)
    return ports


@contextmanager
def slo_changed(battery: Battery, **update: Any) -> Iterator[None]:
    """The battery's release policy with `update` to its SLO for the releases inside; as it was after."""
    saved = load_release_policy(battery.policy)
    changed = saved.model_copy(update={"slo": saved.slo.model_copy(update=update)})
    ReleasePolicyBlock(**changed.model_dump()).save(battery.policy, overwrite=True)
    try:
        yield
    finally:
        ReleasePolicyBlock(**saved.model_dump()).save(battery.policy, overwrite=True)


def build_images(battery: Battery, faults: FaultConfig | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """v1 and v2 good, v3 answering BAD_ERROR_RATE of its requests with errors: gallery versions,
    and the ARM faults injected while v2 and v3 were built (under `faults`; v1 always without)."""
    from flows.image_pipeline import image_pipeline

    def build(app_version: str, fault_profile: FaultProfile | None = None) -> str:
        image = image_pipeline(
            service=battery.service,
            app_version=app_version,
            git_commit=COMMIT,
            environment=battery.environment,
            fault_profile=fault_profile,
        )
        return image.gallery_version

    images = {"v1": build("1.0.0")}
    with arm_faults(battery.emulator, faults or NO_FAULTS) as injected:
        images["v2"] = build("2.0.0")
        images["v3"] = build("3.0.0", FaultProfile(error_rate=BAD_ERROR_RATE))
    return images, injected


# The emulator's fault injection ------------------------------------------------------------------


def _admin(emulator: EmulatorHandle) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.endpoint,
        verify=emulator.ca_bundle,
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=10,
    )


def set_faults(emulator: EmulatorHandle, config: FaultConfig) -> None:
    """PUT /switchyard/faults: replaces the configuration and restarts the counters."""
    with _admin(emulator) as admin:
        admin.put("/switchyard/faults", json=config.model_dump()).raise_for_status()


def faults_injected(emulator: EmulatorHandle) -> dict[str, int]:
    """GET /switchyard/faults: how many faults of each kind were injected since the last PUT."""
    with _admin(emulator) as admin:
        answer = admin.get("/switchyard/faults")
        answer.raise_for_status()
        return {kind: int(n) for kind, n in answer.json()["injected"].items()}


@contextmanager
def arm_faults(emulator: EmulatorHandle, config: FaultConfig = ARM_FAULTS) -> Iterator[dict[str, int]]:
    """Faults on for the block; the dict it yields holds, once the block ends, the faults injected."""
    injected: dict[str, int] = {}
    set_faults(emulator, config)
    try:
        yield injected
    finally:
        injected.update(faults_injected(emulator))
        set_faults(emulator, NO_FAULTS)


# What the cloud shows ----------------------------------------------------------------------------


def observe(battery: Battery) -> ServiceObservation:
    context = battery.context()
    return cloud_for(context).observe(context.topology, with_health=False)


def gateway_problems(observed: ServiceObservation) -> list[str]:
    """What keeps the gateway from holding one consistent configuration: production on the live
    color's own pool (no canary routed), the test listener on the other color, no idle instance left
    in the canary pool, no address that is no instance of the service, the last write succeeded."""
    gateway, live = observed.gateway, observed.live_color
    problems: list[str] = []
    if gateway.provisioning_state != "Succeeded":
        problems.append(f"gateway provisioning state {gateway.provisioning_state}")
    if live is None:
        return [*problems, f"production routes to {gateway.production_pool}, no color's pool"]
    if gateway.production_pool != Topology.pool(live):
        problems.append(f"production routes to {gateway.production_pool}, not {Topology.pool(live)}")
    if gateway.test_pool != Topology.pool(live.other):
        problems.append(f"the test listener routes to {gateway.test_pool}, not {Topology.pool(live.other)}")
    if observed.canary_addresses:
        problems.append(f"idle instances still in the canary pool: {observed.canary_addresses}")
    if observed.foreign_addresses:
        problems.append(f"addresses of no instance in the pools: {observed.foreign_addresses}")
    return problems


def lost_writes(battery: Battery, summary: ReleaseSummary, released: str, serving: str) -> list[str]:
    """Where the cloud differs from what the release reported: routing vs the summary's live_after,
    the image the live color runs, the gateway's phase tag, and the gallery's tags on the image
    (eligible as latest when promoted; tagged rolled back and excluded when rolled back)."""
    observed = observe(battery)
    lost: list[str] = []
    live = observed.live_color
    if summary.live_after is None or live is None or live.value != summary.live_after:
        lost.append(f"production routes to {live}, the summary says {summary.live_after}")
    if live is not None and observed.scale_set(live).runs_only != serving:
        lost.append(f"the live color runs {observed.scale_set(live).runs_only}, not {serving}")
    tags = observed.gateway.tags
    phase = Phase.FINALIZED if summary.outcome == "promoted" else Phase.ROLLED_BACK
    if (tags.get(TAG_RELEASE), tags.get(TAG_PHASE)) != (released, phase):
        lost.append(f"gateway tags say {tags.get(TAG_RELEASE)} {tags.get(TAG_PHASE)}, not {released} {phase}")
    image = cloud_for(battery.context()).gallery.image_version(battery.service, released)
    if summary.outcome == "promoted" and (image.rolled_back or image.exclude_from_latest):
        lost.append(f"{released} is not eligible as latest: {image.tags}, exclude={image.exclude_from_latest}")
    if summary.outcome == "rolled-back" and not (image.rolled_back and image.exclude_from_latest):
        lost.append(f"{released} lost its rolled-back mark: {image.tags}, exclude={image.exclude_from_latest}")
    return lost


def whole_cloud(battery: Battery) -> dict[str, Any]:
    """What a release could change of the battery's service, read through the adapter: the gateway
    (ETag, rules, tags, pools), the idle color whole, the live color's image, every gallery version
    with its tags. The live color's size is left out: its autoscale setting may scale it meanwhile."""
    context = battery.context()
    cloud = cloud_for(context)
    observed = cloud.observe(context.topology, with_health=False)
    gateway, live = observed.gateway, observed.live_color
    return {
        "gateway": (gateway.etag, gateway.production_pool, gateway.test_pool, gateway.tags, gateway.pools),
        "idle": observed.scale_set(live.other).model_dump(mode="json") if live else None,
        "live image": observed.scale_set(live).image_version if live else None,
        "live runs": sorted({i.image_version or "" for i in observed.scale_set(live).instances}) if live else None,
        "gallery": [v.model_dump(mode="json") for v in cloud.gallery.image_versions(battery.service)],
    }


# Scenarios ---------------------------------------------------------------------------------------


@dataclass
class ReleaseUnderFaults:
    """One release under ARM faults and user traffic, and what the cloud and the users saw."""

    name: str
    expected: str  # "promoted" or "rolled-back"
    summary: ReleaseSummary | None
    error: str | None
    report: TrafficReport
    faults: dict[str, int]
    gateway_problems: list[str]
    lost_writes: list[str]
    bad_version: str | None = None
    live_after: tuple[Color | None, str | None] = (None, None)

    @property
    def outcome(self) -> str:
        return self.summary.outcome if self.summary is not None else f"error: {self.error}"

    @property
    def converged(self) -> bool:
        return self.outcome == self.expected and not self.gateway_problems

    @property
    def failed_outside_canary(self) -> int:
        """Failed requests not answered by the bad canary's version (a lost request counts here)."""
        return sum(n for version, n in self.report.failed_by_version.items() if version != self.bad_version)

    @property
    def no_answer(self) -> int:
        return self.report.failed_by_version.get(NO_ANSWER, 0)

    def around_verdict_s(self) -> dict[str, float | None]:
        """For the bad version: from its first answer to the failing verdict, and from the verdict to
        its last answer (TrafficReport.around_verdict); the speeds the e2e tests do not assert, since
        a shared machine moves them by seconds."""
        verdict = self.summary.failed_verdict_at if self.summary is not None else None
        first = back = None
        if verdict is not None and self.bad_version is not None:
            first, back = self.report.around_verdict(self.bad_version, verdict.timestamp())
        return {
            "first_bad_to_verdict_s": round(first, 2) if first is not None else None,
            "verdict_to_traffic_back_s": round(back, 2) if back is not None else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "expected": self.expected,
            "outcome": self.outcome,
            "converged": self.converged,
            "requests_sent": self.report.sent,
            "requests_failed": self.report.failed,
            "requests_failed_outside_canary": self.failed_outside_canary,
            "no_answer": self.no_answer,
            "arm_faults_injected": self.faults,
            "gateway_problems": self.gateway_problems,
            "lost_writes": self.lost_writes,
            **self.around_verdict_s(),
        }


def release_under_faults(
    battery: Battery,
    ports: FrontendPorts,
    name: str,
    image: str,
    serving_after: str,
    expected: str,
    bad_version: str | None = None,
    faults: FaultConfig = ARM_FAULTS,
) -> ReleaseUnderFaults:
    """Release `image` by the battery's policy while users send RATE requests per second and the
    emulator answers faults; then, faults off, judge what the cloud holds. `serving_after` is the
    image production should run when it is over."""
    from flows.release import release

    summary: ReleaseSummary | None = None
    error: str | None = None
    with SteadyTraffic("127.0.0.1", ports.production, rate=RATE, connections=4) as load:
        time.sleep(1)
        with arm_faults(battery.emulator, faults) as injected:
            try:
                summary = release(service=battery.service, environment=battery.environment, image_version=image)
            except ReleaseFailed as failure:
                summary, error = failure.summary, str(failure)
            except Exception as failure:  # the scenario reports it; the caller judges
                error = f"{type(failure).__name__}: {failure}"
        time.sleep(1)
    observed = observe(battery)
    live = observed.live_color
    return ReleaseUnderFaults(
        name=name,
        expected=expected,
        summary=summary,
        error=error,
        report=load.report(),
        faults=dict(injected),
        gateway_problems=gateway_problems(observed),
        lost_writes=lost_writes(battery, summary, image, serving_after) if summary is not None else ["no summary"],
        bad_version=bad_version,
        live_after=(live, observed.scale_set(live).runs_only if live else None),
    )


# Bad input ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    name: str
    parameters: dict[str, Any]
    refusals: tuple[type[BaseException], ...]  # what a clear refusal raises
    says: str  # what its message must name


def bad_inputs(battery: Battery, images: dict[str, str]) -> list[BadInput]:
    """Wrong parameters of the release flow; `images["v3"]` must be the rolled-back one."""
    good = {"service": battery.service, "environment": battery.environment, "image_version": images["v2"]}
    missing = "1009000.20261100.1"  # a well-formed version the gallery does not have
    return [
        BadInput("unknown service", {**good, "service": "no-such-service"}, (UnknownNameError,), "no-such-service"),
        BadInput("unknown environment", {**good, "environment": "nowhere"}, (UnknownNameError,), "nowhere"),
        BadInput("malformed image version", {**good, "image_version": "v2-latest"}, (ReleaseRefused,), "v2-latest"),
        BadInput("image not in the gallery", {**good, "image_version": missing}, (ReleaseRefused,), missing),
        BadInput("image rolled back", {**good, "image_version": images["v3"]}, (ReleaseRefused,), "rolled back"),
        BadInput("unknown policy", {**good, "policy": "no-such-policy"}, (UnknownNameError,), "no-such-policy"),
        # Prefect validates a flow's parameters against their types before the flow runs.
        BadInput("bad strategy", {**good, "strategy": "yolo"}, (ParameterTypeError,), "strategy"),
    ]


@dataclass
class BadInputResult:
    name: str
    raised: str
    message: str
    clear: bool  # the expected kind of error, naming what was wrong
    changed: bool  # the whole cloud differs afterwards

    @property
    def refused_cleanly(self) -> bool:
        return self.clear and not self.changed


def try_bad_input(battery: Battery, case: BadInput, run: Callable[..., Any]) -> BadInputResult:
    """Run the release flow (`run`) with a bad input; compare the whole cloud before and after."""
    before = whole_cloud(battery)
    raised, message, clear = "nothing", "", False
    try:
        run(**case.parameters)
    except Exception as error:
        raised, message = type(error).__name__, str(error)
        clear = isinstance(error, case.refusals) and case.says in message and "Traceback" not in message
    return BadInputResult(case.name, raised, message, clear, whole_cloud(battery) != before)


@dataclass
class BatteryResults:
    releases: list[ReleaseUnderFaults] = field(default_factory=list)
    refusals: list[BadInputResult] = field(default_factory=list)

    def headline(self) -> dict[str, int]:
        return {
            "scenarios": len(self.releases),
            "converged": sum(1 for r in self.releases if r.converged),
            "requests_failed_outside_canary": sum(r.failed_outside_canary for r in self.releases),
            "lost_writes": sum(len(r.lost_writes) for r in self.releases),
            "bad_inputs": len(self.refusals),
            "bad_inputs_refused_cleanly": sum(1 for r in self.refusals if r.refused_cleanly),
        }
