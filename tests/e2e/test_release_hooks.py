"""Release hooks end to end: the release flow on the real emulator and Prefect, with small Python
scripts as the policy's pre_deploy and post_promote hooks.

* a failing pre_deploy refuses the release and the cloud is exactly as before (no write to the idle
  scale set or the gateway: their ETags did not change);
* pre_deploy runs right before the idle color is first prepared, post_promote right after finalize,
  when production already serves the new version (the hook asks production itself), and a
  re-run of the same release runs neither again;
* a failing post_promote leaves the release promoted, with a warning and a hook-failed event.

The service `hooked` is this module's own topology (a copy of `sample` on free ports).
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blocks import ReleasePolicyBlock, ServiceBlock, load_environment, load_service
from flows.image_pipeline import image_pipeline
from flows.provision import provision
from flows.release import release
from switchyard.cloud.factory import cloud_for
from switchyard.core.config import FrontendPorts, ServiceContext
from switchyard.core.fleet import Fleet
from switchyard.core.outcomes import ReleaseRefused
from switchyard.core.rollout import ReleasePolicy, Strategy
from switchyard.core.state import ServiceObservation
from switchyard.stages.traffic import SteadyTraffic
from switchyard_emulator.testing import free_port
from tasks.events import HOOK_FAILED_STEP
from tests.e2e.repo_commits import labelled_commit
from tests.e2e.stack_support import release_events, service_observation, wait_for

pytestmark = pytest.mark.e2e

SERVICE, ENV = "hooked", "production"
COMMIT = labelled_commit("release-hooks")

# pre_deploy: record what it was told and what production served when it ran; fail if asked to.
PRE_DEPLOY = """
import json, os, sys, urllib.request
served = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/version", timeout=5))
keys = ["SWITCHYARD_SERVICE", "SWITCHYARD_ENVIRONMENT", "SWITCHYARD_IMAGE_VERSION", "SWITCHYARD_HOOK"]
record = {k: os.environ[k] for k in keys} | {"production_served": served["gallery_version"], "cwd": os.getcwd()}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(record) + "\\n")
print("expand migration: added column orders.customer_ref")
if len(sys.argv) > 3:
    print("expand migration failed: lock timeout on orders", file=sys.stderr)
    sys.exit(int(sys.argv[3]))
"""
# post_promote: the same, the contract migration's way.
POST_PROMOTE = PRE_DEPLOY.replace("expand", "contract")


def context() -> ServiceContext:
    return ServiceContext(environment=load_environment(ENV), service=load_service(SERVICE))


def observe() -> ServiceObservation:
    return service_observation(ENV, SERVICE)


def rolled_back(version: str) -> bool:
    ctx = context()
    return cloud_for(ctx).gallery.image_version(SERVICE, version).rolled_back


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def hooked(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The service's block, its images (v1 live, v2, v3 published) and the hook scripts' files."""
    service = fleet.services["sample"].model_copy(
        update={
            "name": SERVICE,
            "capacity": 3,
            "frontend_ports": {
                env: FrontendPorts(production=free_port(), test=free_port()) for env in fleet.environments
            },
        }
    )
    asyncio.run(ServiceBlock(**service.model_dump()).asave(SERVICE, overwrite=True))
    scripts = tmp_path_factory.mktemp("hooks")
    (scripts / "pre_deploy.py").write_text(textwrap.dedent(PRE_DEPLOY))
    (scripts / "post_promote.py").write_text(textwrap.dedent(POST_PROMOTE))
    images = {
        name: image_pipeline(service=SERVICE, app_version=version, git_commit=COMMIT).gallery_version
        for name, version in (("v1", "1.0.0"), ("v2", "2.0.0"), ("v3", "3.0.0"))
    }
    provision(service=SERVICE, environment=ENV)
    first = release(service=SERVICE, environment=ENV, image_version=images["v1"], strategy=Strategy.BLUE_GREEN)
    assert first.outcome == "promoted"
    return {"images": images, "scripts": scripts, "port": service.ports_in(ENV).production}


def save_policy(fleet: Fleet, name: str, hooks: dict[str, Any]) -> str:
    """The session's fast default policy, blue-green, with `hooks`."""
    default = fleet.release_policies["default"]
    policy = ReleasePolicy.model_validate({**default.model_dump(), "strategy": "blue-green", "hooks": hooks})
    asyncio.run(ReleasePolicyBlock(**policy.model_dump()).asave(name, overwrite=True))
    return name


def hook(hooked: dict[str, Any], which: str, out: Path, *fail_with: str) -> dict[str, Any]:
    script = hooked["scripts"] / f"{which}.py"
    return {"command": [sys.executable, str(script), str(out), str(hooked["port"]), *fail_with], "timeout_s": 60}


def steps(timeline: list[Any]) -> list[str]:
    return [entry.step for entry in timeline]


def test_a_failing_pre_deploy_hook_refuses_the_release_and_changes_nothing_in_the_cloud(
    fleet: Fleet, hooked: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "pre_deploy.jsonl"
    policy = save_policy(fleet, "hooks-pre-deploy-fails", {"pre_deploy": hook(hooked, "pre_deploy", out, "4")})
    v2 = hooked["images"]["v2"]
    before = observe()
    assert before.live_color is not None
    idle = before.live_color.other

    with pytest.raises(ReleaseRefused) as refused:
        release(service=SERVICE, environment=ENV, image_version=v2, policy=policy)

    message = str(refused.value)
    assert "the pre_deploy hook" in message and "failed (exit code 4" in message
    assert "nothing of this release was changed" in message
    assert [r["SWITCHYARD_IMAGE_VERSION"] for r in records(out)] == [v2]
    after = observe()
    # No write reached the gateway or the idle color: ETags change with every write.
    assert after.gateway.etag == before.gateway.etag and after.gateway.tags == before.gateway.tags
    assert after.live_color == before.live_color
    assert after.scale_set(idle).etag == before.scale_set(idle).etag
    assert [i.image_version for i in after.scale_set(idle).instances] == [
        i.image_version for i in before.scale_set(idle).instances
    ]
    assert v2 not in {i.image_version for color in (idle, idle.other) for i in after.scale_set(color).instances}
    assert not rolled_back(v2)


def test_pre_deploy_runs_before_the_idle_color_is_prepared_and_post_promote_after_full_traffic(
    fleet: Fleet, hooked: dict[str, Any], tmp_path: Path
) -> None:
    pre, post = tmp_path / "pre_deploy.jsonl", tmp_path / "post_promote.jsonl"
    policy = save_policy(
        fleet,
        "hooks-both",
        {
            "pre_deploy": {**hook(hooked, "pre_deploy", pre), "working_dir": str(tmp_path)},
            "post_promote": hook(hooked, "post_promote", post),
        },
    )
    images = hooked["images"]
    v1, v2 = images["v1"], images["v2"]
    with SteadyTraffic("127.0.0.1", hooked["port"], rate=60.0, connections=4):
        time.sleep(1)
        summary = release(service=SERVICE, environment=ENV, image_version=v2, policy=policy)

    assert summary.outcome == "promoted" and not summary.warnings
    assert [(h.hook, h.passed) for h in summary.hooks] == [("pre_deploy", True), ("post_promote", True)]
    assert "added column orders.customer_ref" in summary.hooks[0].stdout_tail
    timeline = steps(summary.timeline)
    # pre_deploy right after the decision to prepare the idle color, before that preparation and
    # everything after it; post_promote right after finalize.
    assert timeline[timeline.index("pre_deploy hook") - 1] == "prepare idle"
    assert timeline.index("pre_deploy hook") < timeline.index("smoke test") < timeline.index("promote")
    assert timeline[timeline.index("post_promote hook") - 1] == "finalize"
    [pre_record], [post_record] = records(pre), records(post)
    assert pre_record == {
        "SWITCHYARD_SERVICE": SERVICE,
        "SWITCHYARD_ENVIRONMENT": ENV,
        "SWITCHYARD_IMAGE_VERSION": v2,
        "SWITCHYARD_HOOK": "pre_deploy",
        "production_served": v1,  # the expand migration ran while the old version served
        "cwd": str(tmp_path),
    }
    assert post_record["SWITCHYARD_HOOK"] == "post_promote"
    assert post_record["production_served"] == v2  # the contract migration ran after promotion

    # Releasing the same image again: it is live and its release finalized (the planner reports that
    # as "promoted", as it would to a run resumed after a crash in finalize), so no step runs and
    # neither hook runs a second time.
    again = release(service=SERVICE, environment=ENV, image_version=v2, policy=policy)
    assert again.outcome == "promoted" and again.hooks == []
    assert [entry.step for entry in again.timeline] == ["preflight", "done"]
    assert len(records(pre)) == 1 and len(records(post)) == 1


def test_a_failing_post_promote_hook_leaves_the_release_promoted_with_a_warning_and_an_alert(
    fleet: Fleet, hooked: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "post_promote.jsonl"
    policy = save_policy(fleet, "hooks-post-promote-fails", {"post_promote": hook(hooked, "post_promote", out, "2")})
    v3 = hooked["images"]["v3"]
    since = datetime.now(UTC)
    with SteadyTraffic("127.0.0.1", hooked["port"], rate=60.0, connections=4):
        time.sleep(1)
        summary = release(service=SERVICE, environment=ENV, image_version=v3, policy=policy)

    assert summary.outcome == "promoted"
    assert summary.outcome_detail.startswith("Promoted, with a warning: the post_promote hook")
    assert len(summary.warnings) == 1 and "failed (exit code 2" in summary.warnings[0]
    [result] = summary.hooks
    assert not result.passed and "lock timeout on orders" in result.stderr_tail
    assert records(out)[0]["production_served"] == v3
    live = observe()
    assert live.live_color is not None and live.scale_set(live.live_color).runs_only == v3
    assert not rolled_back(v3)
    events = wait_for(
        "the hook-failed alert event", lambda: release_events(HOOK_FAILED_STEP, SERVICE, ENV, since), timeout_s=30
    )
    assert events[0].payload["hook"] == "post_promote" and events[0].payload["image"] == v3
