"""A release needs room for the new color beside the live one: without enough vCPU quota in the
region it is refused before any change, with what is missing and what to do, instead of failing
halfway with the new color half-created."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from blocks import load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseRefused
from switchyard_emulator.testing import EmulatorHandle
from tests.e2e.repo_commits import labelled_commit

pytestmark = pytest.mark.e2e

SERVICE, ENV = "depot", "production"
COMMIT = labelled_commit("release-quota")


@contextmanager
def regional_vcpu_quota(emulator: EmulatorHandle, limit: int) -> Iterator[None]:
    """The emulator's regional vCPU quota set to `limit` for a while (its control route)."""
    with httpx.Client(
        base_url=emulator.endpoint, verify=emulator.ca_bundle, headers={"Authorization": f"Bearer {emulator.token}"}
    ) as admin:
        before = admin.get("/switchyard/quotas").json()
        admin.put("/switchyard/quotas", json={"cores": limit}).raise_for_status()
        try:
            yield
        finally:
            admin.put("/switchyard/quotas", json=before).raise_for_status()


def test_a_release_without_room_for_the_new_color_is_refused_before_any_change(
    fleet: Fleet, emulator: EmulatorHandle
) -> None:
    provision(service=SERVICE, environment=ENV)
    image = image_pipeline(service=SERVICE, app_version="1.0.0", git_commit=COMMIT).gallery_version
    context = ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))
    cloud = cloud_for(context)
    before = cloud.observe(context.topology)
    quota = cloud.scale_sets.compute_quota()
    size, capacity = context.service.vm_size, context.service.capacity
    needed = capacity * quota.vcpus_per_vm
    in_use = quota.usages["cores"].current

    with regional_vcpu_quota(emulator, in_use + needed - 1), pytest.raises(ReleaseRefused) as refused:
        release(service=SERVICE, environment=ENV, image_version=image)

    message = str(refused.value)
    assert message.startswith("release refused before any change")
    assert f"{capacity} more {size} VM(s) need {needed} total regional vCPUs" in message
    assert f"the quota leaves {needed - 1}" in message and "ask for a quota increase" in message
    after = cloud.observe(context.topology)
    assert after.gateway.etag == before.gateway.etag
    assert after.scale_sets == before.scale_sets

    # With the room back, the same release goes through.
    summary = release(service=SERVICE, environment=ENV, image_version=image)
    assert summary.outcome == "promoted"
