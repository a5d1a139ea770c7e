"""Flag tasks: set flags in a service's flag store, then read them back through a connection of
their own before saying they are set (the store's port, switchyard/flags/).

A flag write is idempotent (the same value again changes nothing the service sees), so a store that
was busy is tried again; a refusal (no database, one the store does not implement) is not.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from switchyard.checkout import default_state_dir
from switchyard.core.config import ServiceContext
from switchyard.core.flags import FlagChange, FlagState, on_off
from switchyard.core.outcomes import FlagRefused
from switchyard.flags import FlagStore, flag_store
from tasks.events import now
from tasks.release import retry_unless


class FlagNotVerified(Exception):
    """The write went through, but a reader does not see the value it wrote."""


def store_for(context: ServiceContext) -> FlagStore:
    """The flag store of the service in the environment, its {state_dir} this worker's."""
    return flag_store(context.service, context.environment.name, str(default_state_dir()))


def _set(context: ServiceContext, values: dict[str, bool], updated_by: str) -> list[FlagChange]:
    store = store_for(context)
    at = now()
    before = store.write(values, updated_by, at)
    seen = store.read(values)
    wrong = [
        f"{name} reads {on_off(seen[name].enabled) if name in seen else 'no row'}, not {on_off(wanted)}"
        for name, wanted in values.items()
        if name not in seen or seen[name].enabled != wanted
    ]
    if wrong:
        raise FlagNotVerified(f"the flag store {store.location} was written, but {'; '.join(wrong)}")
    changes = []
    for name in values:
        previous = before[name]
        changes.append(
            FlagChange(
                service=context.service.name,
                environment=context.environment.name,
                name=name,
                enabled=seen[name].enabled,
                previous=None if previous is None else previous.enabled,
                updated_at=seen[name].updated_at,
                updated_by=seen[name].updated_by,
                database=store.location,
            )
        )
    return changes


# A busy store is worth another try; a refusal, a bad name or a write a reader does not see are not.
_WORTH_RETRYING = retry_unless(FlagRefused, FlagNotVerified, ValueError)


@task(name="set flag", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1, retry_condition_fn=_WORTH_RETRYING)
def set_flag(context: ServiceContext, name: str, enabled: bool, updated_by: str) -> FlagChange:
    """Turn one flag on or off, and read it back."""
    (change,) = _set(context, {name: enabled}, updated_by)
    return change


@task(name="enable flags", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1, retry_condition_fn=_WORTH_RETRYING)
def enable_flags(context: ServiceContext, names: list[str], updated_by: str) -> list[FlagChange]:
    """Turn the flags on, all in one transaction (all or none), and read them back."""
    return _set(context, dict.fromkeys(names, True), updated_by)


@task(name="read flags", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def read_flags(context: ServiceContext) -> list[FlagState]:
    """Every flag of the service in the environment, as the service reads them now."""
    return list(store_for(context).read().values())
