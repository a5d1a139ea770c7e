"""Canary tasks: put k new instances in front of users, judge them, take them out.

A canary of the idle color into the live color (docs/decisions/0010-canary-pools.md): k idle
instances join the live color's canary pool (a scale-set upgrade of exactly those instances), and
once they are healthy there the production rule moves to that pool in one guarded gateway write.
Taking the canary out is that write in reverse; leaving the pool is clean-up users never see.

The judge looks at whole metric grains only, from the first grain after the write finished, and
only at grains whose data has arrived (switchyard/core/timing.py); the final verdict waits until the
access log holds every request the metrics counted, so percentiles cover the whole window.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from switchyard.cloud.errors import CloudError
from switchyard.cloud.factory import cloud_for
from switchyard.cloud.ports import InstanceMetrics, RequestCounts
from switchyard.core.analysis import (
    AccessLogEntry,
    Analysis,
    CanarySides,
    GoldenSignals,
    WatchDecision,
    access_log_caught_up,
    breach_known_early,
    canary_sides,
    gateway_errors,
    golden_signals,
    latency_by_backend,
    watch_decision,
)
from switchyard.core.canary import judge_canary
from switchyard.core.canary_split import verify_split
from switchyard.core.canary_verdict import Verdict
from switchyard.core.config import ServiceContext
from switchyard.core.rollout import TAG_PHASE, TAG_RELEASE, CanaryStep, Phase, canary_instances_for
from switchyard.core.state import ServiceObservation
from switchyard.core.timing import MetricTiming
from switchyard.core.topology import Topology
from switchyard.stages.traffic import SteadyTraffic
from tasks.events import emit, now
from tasks.release import ReleaseContext, VerificationFailed, wait_healthy


class SplitSet(BaseModel):
    canary_addresses: list[str]  # verified: the idle instances serving in the live color's canary pool
    pool: str  # the canary pool production routes to
    at: datetime  # when the split was in place: the analysis window starts at the next grain


@task(name="shift canary traffic", cache_policy=NO_CACHE)
def set_canary_split(context: ReleaseContext, step: CanaryStep, observed: ServiceObservation) -> SplitSet:
    """SetWeight: exactly k idle instances into the live color's canary pool (a scale-set upgrade of
    those instances, users do not see it yet: on a later step production leaves the canary pool
    while more instances join it), healthy there by the gateway's own probes, then production to
    that pool in one If-Match-guarded write (from then on users meet the canary)."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    topology = context.topology
    live = observed.live_color
    assert live is not None
    idle = live.other
    pool = Topology.canary_pool(live)
    wanted = canary_instances_for(observed, step)
    idle_set = observed.scale_set(idle)
    current = [i.instance_id for i in idle_set.instances if i.private_ip in observed.canary_addresses]
    if sorted(current) != sorted(wanted):
        joining = sorted(set(wanted) - set(current))
        if joining and observed.gateway.canary_routed:
            # A later step while users are on the canary pool. Joining a pool is an upgrade of the
            # instance, which may restart it, and the gateway may still count it healthy by a probe
            # the old process answered: users would meet the restart (502s; seen in CI). Production
            # goes back to the live pool first, guarded by what the planner saw, and to the larger
            # canary below, once the upgrade is done and every member answers its probes.
            assert observed.gateway.etag is not None
            logger.info("canary: production back on %s while instances %s join %s", live.value, joining, pool)
            cloud.router.route(
                topology,
                production=Topology.pool(live),
                test=Topology.pool(idle),
                expect_etag=observed.gateway.etag,
                tags={TAG_RELEASE: context.image_version, TAG_PHASE: Phase.CANARY.value},
            )
        assert idle_set.etag is not None
        logger.info("canary: instances %s of %s join %s", wanted, idle_set.name, pool)
        cloud.scale_sets.set_canary(topology, idle, wanted, idle_set.etag, progress=logger.info)
    addresses_of = {i.instance_id: i.private_ip for i in idle_set.instances}
    canary = [a for a in (addresses_of.get(i) for i in wanted) if a]

    def before_users(now_observed: ServiceObservation) -> list[tuple[str, list[str]]]:
        # Every member of the canary pool must answer its probes before users meet it (or, on a
        # later step, meet more of it). The gateway probes only pools a rule routes to: the canary
        # instances are read where the test listener routes (their own pool), the live ones where
        # production routes now (the live pool, or the canary pool once a first step set it).
        gateway = now_observed.gateway
        return [
            (gateway.test_pool or Topology.pool(idle), canary),
            (gateway.production_pool or Topology.pool(live), now_observed.scale_set(live).addresses),
        ]

    ready = wait_healthy(context, before_users, context.policy.healthy_timeout_s)
    if sorted(ready.canary_addresses) != sorted(canary):
        raise VerificationFailed(f"{pool} holds {ready.canary_addresses} of {idle_set.name}, expected {canary}")
    missing_live = sorted(set(ready.scale_set(live).addresses) - set(ready.gateway.pools[pool].member_addresses))
    if missing_live:
        # Users on the canary pool would meet the canary without the live instances beside it.
        raise VerificationFailed(f"live instances {missing_live} are not in {pool}: refusing to route users there")
    if not ready.gateway.canary_routed:
        assert ready.gateway.etag is not None
        after = cloud.router.route(
            topology,
            production=pool,
            test=Topology.pool(idle),
            expect_etag=ready.gateway.etag,
            tags={TAG_RELEASE: context.image_version, TAG_PHASE: Phase.CANARY.value},
        )
        if after.production_pool != pool:
            raise VerificationFailed(f"production routes to {after.production_pool}, expected {pool}")
    emit(context, "split-set", {"share": step.share, "canary_instances": step.canary_instances})
    return SplitSet(canary_addresses=ready.canary_addresses, pool=pool, at=now())


@task(name="take canary out of production", cache_policy=NO_CACHE)
def clear_canary(context: ReleaseContext, observed: ServiceObservation, members_leave: bool = True) -> None:
    """Production back to the live color's own pool (if it routes to the canary pool), then, with
    `members_leave`, the idle instances leave the canary pool."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    live = observed.live_color
    assert live is not None
    if observed.gateway.canary_routed:
        cloud.router.restore_live_pool(context.topology)
    after = cloud.observe(context.topology, with_health=False)
    if after.gateway.canary_routed:
        raise VerificationFailed(f"production still routes to {after.gateway.production_pool}")
    if members_leave and after.canary_addresses:
        idle_set = after.scale_set(live.other)
        assert idle_set.etag is not None
        cloud.scale_sets.set_canary(context.topology, live.other, [], idle_set.etag, progress=logger.info)


def leave_canary_pool(context: ServiceContext) -> None:
    """Once production is back on the live color's own pool, the idle instances leave its canary
    pool: clean-up users never see. Best effort by design (traffic is already safe): a failure is
    logged, and the next release takes the canary out again before anything else."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    try:
        observed = cloud.observe(context.topology, with_health=False)
        live = observed.live_color
        if live is None or not observed.canary_addresses or observed.gateway.canary_routed:
            return
        idle_set = observed.scale_set(live.other)
        assert idle_set.etag is not None
        cloud.scale_sets.set_canary(context.topology, live.other, [], idle_set.etag, progress=logger.info)
    except Exception as error:
        logger.warning("traffic is safe, but the canary instances did not leave the canary pool: %s", error)


@dataclass(frozen=True, slots=True)
class MetricReads:
    """What Azure Monitor's metrics say of [start, end): the pool's backends' answers per address,
    every request the gateway served from the pool (None when not read: see _read_metrics), and
    every VM's CPU, memory and network out."""

    start: datetime
    end: datetime
    counts: dict[str, RequestCounts]
    served: RequestCounts | None
    every_vm: dict[str, InstanceMetrics]


def _read_metrics(
    context: ReleaseContext, sides: CanarySides, pool: str, start: datetime, end: datetime, *, complete: bool
) -> MetricReads:
    """`complete`: [start, end) holds complete grains only. The pool's own counts, which give the
    gateway's own errors, are read only then: over grains still arriving they are never used (see
    _signals), and leaving them out spares every early look one Resource Manager read."""
    telemetry = cloud_for(context).telemetry
    topology = context.topology
    # One query per color (one when both sides are on the same color): every VM's CPU, memory and
    # network out, from which golden_signals gives each side its own VMs'.
    every_vm = {
        vm: metrics
        for color in dict.fromkeys((sides.baseline_color, sides.canary_color))
        for vm, metrics in telemetry.instance_metrics(topology, color, start, end, sides.vm_sizes.get(color)).items()
    }
    return MetricReads(
        start=start,
        end=end,
        counts=telemetry.requests_by_backend(topology, start, end, pool),
        served=telemetry.pool_requests(topology, start, end, pool) if complete else None,
        every_vm=every_vm,
    )


def _signals(
    sides: CanarySides, metrics: MetricReads, access_log: Sequence[AccessLogEntry], *, partial: bool = False
) -> GoldenSignals:
    """Golden signals of both sides over the metrics' [start, end): counts, CPU, memory and network
    out from metrics (the instances' at the same grains, the canary's per VM name), latency from the
    access log (`access_log`: read by the caller over a range holding this one, or less of it: see
    AccessLogReads), and the 5xx answers the gateway produced itself in the pool.

    `partial`: [start, end) may hold grains whose data is still arriving. Then only what can only
    grow is used (errors, slow requests, CPU and memory samples): the gateway's own errors are left
    out, since they are the pool's failures minus the backends' and the two metrics may arrive
    apart, and so is network out, which is only ever compared at the end of a window."""
    start, end, every_vm = metrics.start, metrics.end, metrics.every_vm
    if partial:
        own_errors = 0
    elif metrics.served is None:
        raise ValueError("the golden signals of complete grains need the pool's own counts: read them complete")
    else:
        own_errors = gateway_errors(metrics.served.failed, metrics.counts)
    return golden_signals(
        sides,
        start,
        end,
        counts=metrics.counts,
        latency_ms=latency_by_backend(access_log, start, end),
        cpu_by_vm={vm: m.cpu_percent for vm, m in every_vm.items()},
        gateway_errors=own_errors,
        memory_by_vm={vm: m.memory_used_percent for vm, m in every_vm.items()},
        network_out=None
        if partial
        else {vm: m.network_out_bytes for vm, m in every_vm.items() if m.network_out_bytes is not None},
    )


# The access log is a Log Analytics query, and Log Analytics allows a user 200 queries in 30 s, for
# every canary of the user together (switchyard/cloud/azure/pacing.py, shared_rate.py): a canary
# that queried at every look (every second by default) would leave room for six at once, and its
# looks would wait their turn. The slow requests of the grains still arriving are read again at most
# this often (or once a grain, on finer grains); complete grains are read once as they complete.
ACCESS_LOG_EARLY_READ_EVERY_S = 5.0


class AccessLogReads:
    """The access log as the watch last read it, and whether a look must read it again.

    A look reads it when the complete grains reach past the last read (the judge needs every request
    of them), or `every_s` after the last read (the slow requests of the grains still arriving, and
    the log catching up after a window ended). Other looks reuse the entries read: the log only grows,
    so an older read can only miss slow requests, never invent them. The errors come from metrics,
    read at every look: a failing version is seen as soon as Azure Monitor counts it, however little
    is left of the query budget."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.entries: list[AccessLogEntry] = []
        self.read_to: datetime | None = None  # the end of the range last read
        self._read_at: float | None = None
        self._clock = clock

    def due(self, complete_until: datetime) -> bool:
        if self.read_to is None or self._read_at is None:
            return True
        return self.read_to < complete_until or self._clock() - self._read_at >= self.every_s

    def holds(self, complete_until: datetime) -> bool:
        """Whether the last read reaches the end of the complete grains."""
        return self.read_to is not None and self.read_to >= complete_until

    def keep(self, entries: Sequence[AccessLogEntry], read_to: datetime) -> None:
        self.entries, self.read_to, self._read_at = list(entries), read_to, self._clock()


class BackgroundLogReads:
    """The access log read on a thread of its own, one read at a time, so that a slow or failing Log
    Analytics never holds a look: a query that fails is retried by the SDK for seconds (three
    retries of a 500, ~5.4 s), and a look held that long would read the metrics, where a failing
    canary's errors are counted, that much less often. Metrics read at every look are what roll a
    bad canary back in seconds; the log only adds the slow requests.

    `look` starts a read when one is due (AccessLogReads.due) and none is running, and waits for the
    running one at most `wait_s` (a healthy query answers within it, and the look judges with it at
    once); a slower read is picked up by a later look. What a read returns, or how it fails, goes
    through `reads` as a read in the look would (TelemetryReads): its failures in a row still end the
    analysis, at the pace the SDK's retries set, as before."""

    def __init__(self, log: AccessLogReads, reads: TelemetryReads, wait_s: float) -> None:
        self._log = log
        self._reads = reads
        self._wait_s = wait_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-log")
        self._running: tuple[Future[list[AccessLogEntry]], datetime] | None = None

    def look(self, complete_until: datetime, read: Callable[[], list[AccessLogEntry]], read_to: datetime) -> bool:
        """Start `read` (of the log up to `read_to`) if the log is due a read with the grains complete
        until `complete_until` and no read is running; whether a read finished and was kept in the
        log by this look."""
        if self._running is None and self._log.due(complete_until):
            # The read's thread sees this look's context (the Prefect settings and run it belongs to).
            self._running = (self._pool.submit(contextvars.copy_context().run, read), read_to)
        if self._running is None:
            return False
        running, read_to = self._running
        wait([running], timeout=self._wait_s)
        if not running.done():
            return False
        self._running = None
        logged = self._reads.read("the access log", running.result)
        if logged is None:
            return False
        self._log.keep(logged, read_to)
        return True

    def close(self) -> None:
        """The watch is over: a read still running ends on its own; nothing waits for it."""
        self._pool.shutdown(wait=False, cancel_futures=True)


# A read of the golden signals that fails (after the SDK's own retries) decides nothing: the next
# look reads again, as Argo Rollouts lets a metric err a few times in a row (consecutiveErrorLimit)
# before its analysis errs. This many failures in a row end the analysis with the last error, and
# the release rolls back: a canary that cannot be judged has not passed.
TELEMETRY_FAILURES_IN_A_ROW = 4
_Read = TypeVar("_Read")


class TelemetryReads:
    """The watch's reads of the golden signals, riding over a few failed ones in a row.

    Counted per read (`what`): a look reads metrics and, less often, the access log, and metrics that
    answer must not hide a log that never does (its complete grains would then never be judged)."""

    def __init__(self, warn: Callable[..., None]) -> None:
        self.failed: list[str] = []  # every failed read ridden over, for the release's summary
        self._in_a_row: dict[str, int] = {}
        self._warn = warn

    def read(self, what: str, signals: Callable[[], _Read]) -> _Read | None:
        """What `signals` reads, or None when this read failed and the next look may read again."""
        try:
            read = signals()
        except CloudError as error:
            in_a_row = self._in_a_row[what] = self._in_a_row.get(what, 0) + 1
            if in_a_row >= TELEMETRY_FAILURES_IN_A_ROW:
                raise CloudError(
                    f"the golden signals ({what}) could not be read {in_a_row} times in a row; last: {error}"
                ) from error
            self.failed.append(f"{what}: {error}")
            self._warn(
                "reading the golden signals (%s) failed, %d time(s) in a row (the analysis fails at %d): %s; "
                "the next look reads again",
                what,
                in_a_row,
                TELEMETRY_FAILURES_IN_A_ROW,
                error,
            )
            return None
        self._in_a_row[what] = 0
        return read


def _watch(
    context: ReleaseContext,
    sides: CanarySides,
    pool: str,
    timing: MetricTiming,
    *,
    start: datetime,
    end: datetime,
    changed_at: datetime,
    compare: bool,
    may_extend: bool,
    reads: TelemetryReads,
) -> tuple[Verdict, GoldenSignals, bool]:
    """Look at every check interval (core's watch_decision says what each look means) at the
    complete grains of [start, end) until the window is decided; (verdict, signals, ended early).
    `reads` rides over a few failed reads in a row (TelemetryReads).

    Passing needs complete grains; failing does not. Each look first reads the metrics of everything
    visible since the grain of the change (`changed_at`), complete or not: a breach known there stops
    the watch without waiting for the grain to complete, whether it is *certain* (more errors or slow
    requests than the SLO allows over the minimum sample, counts that late data can only raise) or,
    above the minimum, shown by the judge's sequential test (core's breach_known_early). On one-minute
    grains that is the difference between rolling back within seconds and after two minutes. The
    slow requests come from the access log, read less often than the metrics (AccessLogReads): its
    query budget is the scarcest thing every canary of a user shares. Its queries go out from a
    thread of their own (BackgroundLogReads): a failing Log Analytics never holds a look."""
    logger = get_run_logger()
    policy = context.policy
    listener = context.topology.production_listener
    window = end - start
    extended = False
    # low_traffic "wait": an inconclusive window (too little data) extends again and again, up to this.
    patience = start + timedelta(seconds=policy.low_traffic_wait_s) if policy.low_traffic == "wait" else None
    log_deadline: float | None = None
    said: set[str] = set()  # what the watch waits for, logged once each rather than at every look

    def say_once(waiting_for: str) -> None:
        if waiting_for not in said:
            logger.info("%s", waiting_for)
            said.add(waiting_for)

    arriving_from = timing.grain_start(changed_at)  # the grains still arriving: read for a breach known early
    first_grain = f"waiting for the first complete metric grain after {start.isoformat()}"
    telemetry = cloud_for(context).telemetry
    log = AccessLogReads(min(timing.grain_s, ACCESS_LOG_EARLY_READ_EVERY_S))

    complete: MetricReads | None = None  # the complete grains' metrics, read once as they complete
    analysed_until: datetime | None = None  # the end of the complete grains "analysing:" last spoke of

    def complete_grains(until: datetime) -> MetricReads | None:
        """The metrics of [start, until) (None when the read failed): complete grains do not
        change, so they are read only when they reach further."""
        nonlocal complete
        if complete is None or complete.end != until:
            read = reads.read(
                "the complete grains", partial(_read_metrics, context, sides, pool, start, until, complete=True)
            )
            if read is None:
                return None
            complete = read
        return complete

    def known_early(arriving: MetricReads) -> tuple[Verdict, GoldenSignals] | None:
        visible = _signals(sides, arriving, log.entries, partial=True)
        verdict = judge_canary(visible.evidence, policy.slo, compare_with_baseline=False)
        return (verdict, visible) if breach_known_early(verdict, policy.slo.sequential_alpha) else None

    log_reads = BackgroundLogReads(log, reads, wait_s=policy.check_interval_s)
    with closing(log_reads):
        # The first look comes soon: a bad version shows itself in its first requests.
        pause = min(0.1, policy.check_interval_s)
        while True:
            time.sleep(pause)
            pause = policy.check_interval_s
            looked_at = now()
            until = min(end, timing.complete_until(looked_at))
            # Early until the window's grains are complete, not only until it ends: on Azure's timing the
            # grain holding the canary's first requests is published a minute or more after it, often
            # after a one-grain window has ended, and a breach known there is as known then.
            early = until < end
            # Metrics first, at every look: the errors of everything visible since the change (or of the
            # window, once its grains are complete), which need no access log to be known.
            seen_from, seen_to = (arriving_from, looked_at) if early else (start, until)
            if early:
                seen = reads.read(
                    "the grains still arriving",
                    partial(_read_metrics, context, sides, pool, seen_from, seen_to, complete=False),
                )
            else:
                seen = complete_grains(until)
            breach = known_early(seen) if seen is not None else None
            # The access log: started when due, picked up when read (it never holds a look for long).
            fresh_log = breach is None and log_reads.look(
                until,
                partial(telemetry.access_log, context.topology, seen_from, seen_to, listener, pool),
                seen_to,
            )
            if fresh_log and seen is not None:
                breach = known_early(seen)  # now with the slow requests of the fresh read
            if breach is not None:
                verdict, visible = breach
                when = "before its grains completed" if early else "whatever the access log holds"
                logger.warning("SLO breach known %s: %s", when, verdict.summary)
                return verdict, visible, True
            if until <= start:
                say_once(first_grain)
                continue
            metrics = seen
            if early:
                metrics = complete_grains(until)
            if metrics is None:
                continue  # the read of the complete grains failed: the next look reads them again
            if not log.holds(until):
                # The log read of the complete grains failed (a later look reads it again) or is still
                # out. Their errors, CPU and memory are final without it, and a breach of those needs
                # no latency: waiting for the log would only let a failing canary serve longer (or,
                # should the log stay down, be rolled back for the reads rather than for what it did).
                without_log = _signals(sides, metrics, ())
                verdict = judge_canary(without_log.evidence, policy.slo, compare_with_baseline=False)
                if watch_decision(verdict, window_ended=False, may_extend=False) == WatchDecision.STOP_EARLY:
                    logger.warning(
                        "SLO breach in the complete grains, judged without the access log: %s", verdict.summary
                    )
                    return verdict, without_log, True
                continue
            signals = _signals(sides, metrics, log.entries)
            verdict = judge_canary(signals.evidence, policy.slo, compare_with_baseline=compare)
            window_ended = until >= end
            if window_ended and not access_log_caught_up(signals):
                # The access log arrives after an ingestion delay: wait for it (within reason) so that the
                # percentiles are the whole window's, then judge with what there is and say so.
                log_deadline = log_deadline or time.monotonic() + policy.log_ingestion_timeout_s
                if time.monotonic() < log_deadline:
                    say_once(
                        f"window until {end.isoformat()} complete; "
                        "waiting for the access log to hold every request it counted"
                    )
                    window_ended = False
                else:
                    logger.warning("the access log still misses requests after %.0f s", policy.log_ingestion_timeout_s)
            may_wait = patience is not None and end + window <= patience
            decision = watch_decision(
                verdict, window_ended=window_ended, may_extend=may_extend and (not extended or may_wait)
            )
            if decision == WatchDecision.STOP_EARLY:
                logger.warning("SLO breach before the window ended: %s", verdict.summary)
                return verdict, signals, True
            if decision == WatchDecision.DECIDED:
                return verdict, signals, False
            if decision == WatchDecision.EXTEND:
                if not _production_routes_to(context, pool):
                    # Someone else moved production off this pool (a person's rollback): waiting for data
                    # it can no longer get would only delay the release noticing, at its next step.
                    logger.warning("production no longer routes to %s: the analysis ends with what it has", pool)
                    return verdict, signals, False
                # Same start, more data: the window becomes twice as long.
                logger.info(
                    "inconclusive after %.0f s (%s): extending the window%s",
                    (end - start).total_seconds(),
                    verdict.summary,
                    " (low_traffic: wait)" if extended else " once",
                )
                end += window
                extended = True
                log_deadline = None
                continue
            if analysed_until == until:
                continue  # the same grains, judged again with what the log holds now: nothing new to say
            analysed_until = until
            logger.info(
                "analysing: %d canary / %d total requests, %s",
                signals.canary_requests,
                signals.total_requests,
                verdict.summary,
            )


def _production_routes_to(context: ReleaseContext, pool: str) -> bool:
    routed = cloud_for(context).router.routes(context.topology).production_pool
    return routed is not None and routed.lower() == pool.lower()


@contextmanager
def synthetic_load(context: ReleaseContext) -> Iterator[None]:
    """The policy's synthetic load through the production listener while the block runs (a split and
    its analysis): where users are too few, these requests are what the judge sees on both sides."""
    if context.policy.synthetic_load is None:
        yield
        return
    load = context.policy.synthetic_load.for_service(context.service.synthetic_load_path)
    logger = get_run_logger()
    address = cloud_for(context).router.frontend_address(context.topology)
    port = context.service.ports_in(context.environment.name).production
    traffic = SteadyTraffic(address, port, rate=load.rate_per_s, connections=load.connections, path=load.path)
    logger.info("synthetic load: %g requests/s to http://%s:%d%s", load.rate_per_s, address, port, load.path)
    with traffic:
        yield
    report = traffic.report()
    logger.info("synthetic load: %d request(s) sent, %d failed", report.sent, report.failed)


@task(name="analyse canary", cache_policy=NO_CACHE)
def analyse_canary(
    context: ReleaseContext,
    step: CanaryStep,
    observed: ServiceObservation,
    split: SplitSet | None = None,
) -> Analysis:
    """VerifyWeight + judge: the delivered split is measured, then the golden signals are judged.

    `split` is the split just set (the window starts at the first grain after it); without it, the
    canary `observed` shows, from now."""
    logger = get_run_logger()
    live = observed.live_color
    assert live is not None
    pool = split.pool if split else Topology.canary_pool(live)
    canary_addresses = split.canary_addresses if split else observed.canary_addresses
    sides = canary_sides(observed, canary_addresses, live, live.other)
    timing = cloud_for(context).telemetry.timing(context.topology).with_delay(context.policy.metrics_delay_s)
    changed_at = split.at if split else now()
    start, end = timing.window_after(changed_at, context.policy.analysis_window_s)
    reads = TelemetryReads(logger.warning)
    verdict, signals, early = _watch(
        context,
        sides,
        pool,
        timing,
        start=start,
        end=end,
        changed_at=changed_at,
        compare=True,
        may_extend=True,
        reads=reads,
    )
    # An early stop has too few requests to verify a split with; the verdict decides alone.
    delivered = (
        None
        if early
        else verify_split(step.share, signals.canary_requests, signals.total_requests, context.policy.split_tolerance)
    )
    analysis = Analysis(
        verdict=verdict, split=delivered, decided_at=now(), early=early, telemetry_failures=reads.failed
    )
    logger.info(
        "canary at %.1f%%: %s%s", step.share * 100, verdict.summary, f"; {delivered.reason}" if delivered else ""
    )
    emit(
        context,
        "analysed",
        {
            "share": step.share,
            "outcome": verdict.outcome.value,
            "summary": verdict.summary,
            "passed": analysis.passed,
        },
    )
    return analysis


@task(name="analyse under full traffic", cache_policy=NO_CACHE)
def analyse_promoted(context: ReleaseContext, observed: ServiceObservation) -> Analysis:
    live = observed.live_color
    assert live is not None
    sides = canary_sides(observed, observed.scale_set(live).addresses, live, live)
    timing = cloud_for(context).telemetry.timing(context.topology).with_delay(context.policy.metrics_delay_s)
    promoted_at = now()
    start, end = timing.window_after(promoted_at, context.policy.promoted_analysis_window_s)
    reads = TelemetryReads(get_run_logger().warning)
    verdict, _, early = _watch(
        context,
        sides,
        Topology.pool(live),
        timing,
        start=start,
        end=end,
        changed_at=promoted_at,
        compare=False,
        may_extend=False,
        reads=reads,
    )
    emit(context, "analysed-promoted", {"outcome": verdict.outcome.value, "summary": verdict.summary})
    return Analysis(verdict=verdict, decided_at=now(), early=early, telemetry_failures=reads.failed)
