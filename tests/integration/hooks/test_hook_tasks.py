"""The Prefect tasks the release flow calls run the policy's hook for the release in hand, inside a
real flow run on a real (test) Prefect server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow

from switchyard.core.hooks import HookResult, ReleaseHooks
from switchyard.core.rollout import ReleasePolicy
from tasks.hooks import run_post_promote_hook, run_pre_deploy_hook
from tasks.release import ReleaseContext
from tests.prefect_test_server import prefect_test_server
from tests.unit.core.cloud_states import V2, context


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    with prefect_test_server():
        yield


def release_context(hooks: ReleaseHooks) -> ReleaseContext:
    base = context()
    return ReleaseContext(
        environment=base.environment,
        service=base.service,
        policy=ReleasePolicy(hooks=hooks),
        image_version=V2,
    )


@flow
def both_hooks(release: ReleaseContext) -> tuple[HookResult | None, HookResult | None]:
    return run_pre_deploy_hook(release), run_post_promote_hook(release)


def test_the_release_tasks_run_the_policys_hooks_for_the_release(prefect_api: None, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    record = (
        "import os, sys\n"
        "told = os.environ['SWITCHYARD_HOOK'] + ' ' + os.environ['SWITCHYARD_IMAGE_VERSION']\n"
        "open(sys.argv[1], 'a').write(told + '\\n')"
    )
    hooks = ReleaseHooks.model_validate(
        {"pre_deploy": {"command": [sys.executable, "-c", record, str(out)], "working_dir": str(tmp_path)}}
    )
    pre, post = both_hooks(release_context(hooks))
    assert pre is not None and pre.passed and pre.hook == "pre_deploy"
    assert post is None  # the policy has no post_promote hook
    assert out.read_text() == f"pre_deploy {V2}\n"


def test_a_failing_hook_is_a_result_the_flow_decides_on_not_a_failed_task(prefect_api: None, tmp_path: Path) -> None:
    hooks = ReleaseHooks.model_validate({"post_promote": {"command": [sys.executable, "-c", "raise SystemExit(5)"]}})
    pre, post = both_hooks(release_context(hooks))
    assert pre is None
    assert post is not None and not post.passed and post.exit_code == 5
