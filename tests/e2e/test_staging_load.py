"""A release to an environment nobody uses (staging): judged on synthetic load, or refused first.

Staging's policy in fleet.yaml drives synthetic requests through the production listener while it
judges a canary (like Flagger's load tester). Without it, a canary there could only be rolled back
for want of data ("No requests were served"), so preflight refuses before any change and says what
to configure. Nothing here sends user traffic.
"""

from __future__ import annotations

import pytest

from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.core.canary_verdict import CanaryOutcome
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseRefused
from switchyard.core.rollout import Strategy
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import live_image, service_observation

pytestmark = pytest.mark.e2e

SERVICE, ENV = "quay", "staging"
COMMIT = labelled_commit("staging-load")


@pytest.fixture(scope="module")
def images(fleet: Fleet) -> dict[str, str]:
    built = {f"v{n}": image_pipeline(service=SERVICE, app_version=f"{n}.0.0", git_commit=COMMIT) for n in (1, 2, 3)}
    provision(service=SERVICE, environment=ENV)
    assert release(service=SERVICE, environment=ENV, image_version=built["v1"].gallery_version).outcome == "promoted"
    return {name: image.gallery_version for name, image in built.items()}


def test_staging_without_users_is_judged_on_synthetic_load_and_promoted(fleet: Fleet, images: dict[str, str]) -> None:
    policy = fleet.release_policies[fleet.environments[ENV].release_policy or "default"]
    assert policy.synthetic_load is not None and policy.strategy == Strategy.CANARY  # as fleet.yaml says

    summary = release(service=SERVICE, environment=ENV, image_version=images["v2"])

    assert summary.outcome == "promoted", summary.outcome_detail
    [canary, *_] = summary.analyses
    assert canary.verdict.outcome == CanaryOutcome.PASS, canary.verdict.summary
    assert canary.split is not None and canary.split.matches, canary.split
    assert any("plus synthetic load" in event.detail for event in summary.timeline if event.step == "preflight")
    assert live_image(ENV, SERVICE) == images["v2"]


def test_staging_without_users_or_synthetic_load_is_refused_before_any_change(images: dict[str, str]) -> None:
    before = service_observation(ENV, SERVICE)

    with pytest.raises(ReleaseRefused) as refused:
        release(service=SERVICE, environment=ENV, image_version=images["v3"], policy="staging-without-load")

    message = str(refused.value)
    assert "too little traffic to judge a canary in staging" in message
    assert "synthetic_load: {rate_per_s:" in message and "low_traffic: wait" in message
    after = service_observation(ENV, SERVICE)
    assert after.gateway.etag == before.gateway.etag
    assert before.live_color is not None
    assert after.scale_set(before.live_color.other) == before.scale_set(before.live_color.other)
