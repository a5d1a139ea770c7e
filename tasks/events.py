"""Release events: one per step (automations and the UI's event feed follow a release by them), and
the heartbeat a running release sends, whose silence the guard automation acts on."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect.events import emit_event
from prefect.runtime import flow_run

from switchyard.core.config import ServiceContext
from switchyard.core.flags import FlagChange


def now() -> datetime:
    return datetime.now(UTC)


def emit(context: ServiceContext, step: str, payload: dict[str, object]) -> None:
    """An event per release step, so automations and the UI's event feed can follow a release."""
    emit_for_service(context, f"switchyard.release.{step}", payload)


def emit_for_service(context: ServiceContext, event: str, payload: dict[str, object]) -> None:
    """An event about a service in an environment: one resource per pair, whatever happened to it."""
    topology = context.topology
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"switchyard.service.{topology.service}.{topology.environment}",
            "prefect.resource.name": f"{topology.service} in {topology.environment}",
            "switchyard.service": topology.service,
            "switchyard.environment": topology.environment,
        },
        payload=payload,
    )


HEARTBEAT_EVENT = "switchyard.release.heartbeat"
FINISHED_EVENT = "switchyard.release.finished"
# A release hook failed (payload: image, hook, detail). After post_promote it is the only sign of
# trouble, since the release itself stays promoted: point an automation's notification at it.
HOOK_FAILED_STEP = "hook-failed"
HOOK_FAILED_EVENT = f"switchyard.release.{HOOK_FAILED_STEP}"
# A release policy's enable_flags could not turn its flags on (payload: image, flags, detail); the
# release stays promoted, so this is the alert, like hook-failed.
FLAGS_FAILED_STEP = "flags-failed"
FLAGS_FAILED_EVENT = f"switchyard.release.{FLAGS_FAILED_STEP}"
# Every flag switchyard sets, by a person or a release (payload: flag, enabled, previous, updated_by).
FLAG_SET_EVENT = "switchyard.flag.set"


def emit_flag_set(context: ServiceContext, change: FlagChange, extra: dict[str, object] | None = None) -> None:
    """A flag switchyard set, whoever asked: automations and the event feed see every flip."""
    payload: dict[str, object] = {
        "flag": change.name,
        "enabled": change.enabled,
        "previous": change.previous,
        "updated_by": change.updated_by,
        **(extra or {}),
    }
    emit_for_service(context, FLAG_SET_EVENT, payload)


@contextmanager
def heartbeat(context: ServiceContext, image_version: str, interval_s: float = 5.0) -> Iterator[None]:
    """Emit a heartbeat event every `interval_s` while the release runs, and `finished` at the end.

    If the run dies (a killed process, a lost machine) the heartbeats stop; the guard automation
    (flows/guard.py and its trigger in prefect.yaml) notices their absence and takes any canary out of production.
    """
    stop = threading.Event()
    # The run the beats speak for: the guard asks Prefect about it before it believes a silence.
    payload: dict[str, object] = {"image": image_version, "interval_s": interval_s}
    run_id = flow_run.get_id()
    if run_id:
        payload["flow_run_id"] = str(run_id)

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                emit(context, "heartbeat", payload)
            except Exception as error:  # one failed beat must not end the beating: the guard would
                # take a live release for dead
                logging.getLogger("switchyard.heartbeat").warning("a release heartbeat failed: %s", error)

    emit(context, "heartbeat", payload)
    # The beats run in the caller's context: a Prefect API chosen by temporary_settings (the demo,
    # tests) is a context variable, and a thread without it would send to a temporary server instead.
    caller = contextvars.copy_context()
    thread = threading.Thread(target=caller.run, args=(beat,), name="release-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    except Exception:
        stop.set()
        thread.join(timeout=interval_s)
        emit(context, "finished", {"image": image_version})  # failed, but on its own terms
        raise
    except BaseException:
        # Cancelled or terminated: no `finished`, so the guard treats the run as dead and takes any
        # canary it left out of production.
        stop.set()
        raise
    stop.set()
    thread.join(timeout=interval_s)
    emit(context, "finished", {"image": image_version})
