"""The test stages after smoke, against the new color through the test listener, before any user:
the service's integration tests (a command it provides) and the policy's performance test (a steady
load judged on errors and p95). What each stage asks is switchyard/core/stages.py; a failed stage
stops the release before users meet the new version, as a failed smoke test does."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from switchyard.cloud.factory import cloud_for
from switchyard.core.stages import StageResult, judge_performance
from switchyard.core.topology import Color, Topology
from switchyard.stages.traffic import SteadyTraffic
from tasks.events import emit
from tasks.hooks import log_result, run_hook
from tasks.release import ReleaseContext, VerificationFailed


class StageFailed(VerificationFailed):
    """A test stage failed on the idle color: the release stops before any user meets it."""

    def __init__(self, message: str, result: StageResult) -> None:
        super().__init__(message)
        self.result = result


def _test_url(context: ReleaseContext, color: Color) -> tuple[str, int]:
    """The test listener's address and port, after checking it routes to `color` (what is tested)."""
    cloud = cloud_for(context)
    gateway = cloud.router.routes(context.topology)
    if gateway.test_pool != Topology.pool(color):
        raise VerificationFailed(f"the test listener routes to {gateway.test_pool}, not {color.value}")
    return cloud.router.test_address(context.topology), context.service.ports_in(context.environment.name).test


def _stop_on_failure(context: ReleaseContext, result: StageResult) -> StageResult:
    emit(context, f"{result.stage}-tested", {"image": context.image_version, "passed": result.passed})
    if not result.passed:
        raise StageFailed(f"{result.stage} tests of {context.image_version} failed: {result.detail}", result)
    return result


def stages_after_smoke(context: ReleaseContext) -> list[Callable[[ReleaseContext, Color], StageResult]]:
    """The test stages after smoke that this release has, in order: the service's integration tests
    and the policy's performance test, each only when configured. One that is not configured is not
    run at all: as a task it would show in the run as a step that passed."""
    stages: list[Callable[[ReleaseContext, Color], StageResult]] = []
    if context.service.integration_test is not None:
        stages.append(integration_test)
    if context.policy.performance_test is not None:
        stages.append(performance_test)
    return stages


class StageNotConfigured(ValueError):
    """A test stage was asked to run for a release whose service or policy does not configure it."""


@task(name="integration tests on idle color", cache_policy=NO_CACHE)
def integration_test(context: ReleaseContext, color: Color) -> StageResult:
    """The service's integration_test command against the test URL."""
    command = context.service.integration_test
    if command is None:
        raise StageNotConfigured(f"{context.service.name} has no integration_test")
    logger = get_run_logger()
    address, port = _test_url(context, color)
    url = f"http://{address}:{port}"
    logger.info("integration tests: %s against %s (timeout %g s)", command.describe(), url, command.timeout_s)
    result = run_hook(
        command,
        "integration",
        service=context.service.name,
        environment=context.environment.name,
        image_version=context.image_version,
        extra_env={"SWITCHYARD_TEST_URL": url},
    )
    log_result(logger, result)
    return _stop_on_failure(context, StageResult(stage="integration", passed=result.passed, detail=result.detail))


@task(name="performance test on idle color", cache_policy=NO_CACHE)
def performance_test(context: ReleaseContext, color: Color) -> StageResult:
    """The policy's performance_test: a steady load through the test listener, judged."""
    test = context.policy.performance_test
    if test is None:
        raise StageNotConfigured(f"the release policy of {context.service.name} has no performance_test")
    logger = get_run_logger()
    address, port = _test_url(context, color)
    logger.info("performance test: %s on %s:%d", test.describe(), address, port)
    with SteadyTraffic(address, port, rate=test.rate_per_s, connections=test.connections, path=test.path) as load:
        time.sleep(test.duration_s)
    report = load.report()
    result = judge_performance(
        test, latencies_s=[r.latency_s for r in report.records if not r.failed], failed=report.failed, sent=report.sent
    )
    (logger.info if result.passed else logger.error)("performance test: %s", result.detail)
    return _stop_on_failure(context, result)
