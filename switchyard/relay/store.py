"""Prefect's event store as the relay's memory: what it emitted, readable by every replica.

The relay keeps no state of its own. Whether a delivery or a merge was already relayed, and the
newest version emitted for a service, are read back from the Prefect server's events
(POST /api/events/filter): the database every relay replica already shares, which outlives relay and
Prefect server restarts and keeps events for PREFECT_SERVER_EVENTS_RETENTION_PERIOD (7 days by
default).

Prefect persists events in batches (every few seconds: the event persister's flush interval), so
an event the relay emitted a moment ago may not be readable yet. What covers those seconds is
Prefect itself: it stores an event id once, and its triggers skip an id they have already seen
(for 30 minutes), so an event emitted twice still starts release-on-merge once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from switchyard.core.versions import AppVersion, VersionError
from switchyard.relay.payloads import DELIVERY_LABEL, EVENT_NAME, SERVICE_LABEL, resource_id

# Prefect answers at most 50 events per page (INTERACTIVE_PAGE_SIZE).
_PAGE = 50


class EventStoreError(Exception):
    """The Prefect API did not take the events, or did not answer a look-up."""


@dataclass(frozen=True)
class StoredMerge:
    """A `switchyard.git.merged` event as the store holds it."""

    id: str
    service: str
    app_version: str
    commit: str
    repository: str

    def answer(self) -> dict[str, str]:
        return {"id": self.id, "service": self.service, "app_version": self.app_version, "commit": self.commit}


def _stored(event: Any) -> StoredMerge | None:
    payload = event.payload if isinstance(event.payload, dict) else {}
    fields = [payload.get(name) for name in ("service", "app_version", "commit", "repository")]
    texts = [value for value in fields if isinstance(value, str)]
    if len(texts) != len(fields):
        return None  # not written by this relay (or by an older shape of it): nothing to compare with
    service, app_version, commit, repository = texts
    return StoredMerge(str(event.id), service, app_version, commit, repository)


class PrefectEventStore:
    """Emit merge events, and look up the ones emitted within the last `window`, through Prefect's
    own client (its URL, auth and TLS settings)."""

    def __init__(self, window: timedelta) -> None:
        self.window = window

    async def emit(self, events: list[dict[str, Any]]) -> None:
        from prefect.client.orchestration import get_client

        try:
            async with get_client() as client:
                response = await client.request("POST", "/events", json=events)
        except Exception as error:
            raise EventStoreError(f"{type(error).__name__}: {error}") from None
        if response.status_code >= 300:
            raise EventStoreError(f"the Prefect API answered {response.status_code}")

    async def _read(self, limit: int = _PAGE, **criteria: Any) -> list[StoredMerge]:
        from prefect.client.orchestration import get_client
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        now = datetime.now(UTC)
        # `until` a day ahead: another replica's clock may run a little ahead of this one, and its
        # event's `occurred` must not fall outside the window for that.
        occurred = EventOccurredFilter(since=now - self.window, until=now + timedelta(days=1))
        query = EventFilter(occurred=occurred, event=EventNameFilter(name=[EVENT_NAME]), **criteria)
        try:
            async with get_client() as client:
                page = await client.read_events(filter=query, limit=limit)
        except Exception as error:
            raise EventStoreError(f"{type(error).__name__}: {error}") from None
        return [merge for merge in map(_stored, page.events) if merge is not None]

    async def by_delivery(self, delivery: str) -> list[StoredMerge]:
        """The events emitted for this delivery id (GitHub keeps the id when it redelivers)."""
        from prefect.events.filters import EventResourceFilter
        from prefect.events.schemas.events import ResourceSpecification

        return await self._read(resource=EventResourceFilter(labels=ResourceSpecification({DELIVERY_LABEL: delivery})))

    async def by_ids(self, ids: list[str]) -> list[StoredMerge]:
        from uuid import UUID

        from prefect.events.filters import EventIDFilter

        found: list[StoredMerge] = []
        for start in range(0, len(ids), _PAGE):  # one id is at most one event: a page per 50 ids
            chunk = [UUID(i) for i in ids[start : start + _PAGE]]
            found += await self._read(limit=len(chunk), id=EventIDFilter(id=chunk))
        return found

    async def highest(self, repository: str, service: str) -> tuple[AppVersion, StoredMerge] | None:
        """The highest app version among the newest events for (repository, service).

        The relay only ever emits upwards, so the newest event normally holds the highest version;
        taking the maximum of the newest page also covers two replicas that emitted out of order at
        the same moment."""
        from prefect.events.filters import EventResourceFilter
        from prefect.events.schemas.events import ResourceSpecification

        labels = ResourceSpecification({SERVICE_LABEL: service})
        resource = EventResourceFilter(id=[resource_id(repository)], labels=labels)
        best: tuple[AppVersion, StoredMerge] | None = None
        for merge in await self._read(resource=resource):
            try:
                version = AppVersion.parse(merge.app_version)
            except VersionError:
                continue
            if best is None or best[0] < version:
                best = (version, merge)
        return best
