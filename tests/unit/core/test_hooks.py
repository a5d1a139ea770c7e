"""Release hooks as configuration (what a policy may say, and the clear errors when it is wrong), when
pre_deploy is due, and how results read in the release summary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from pydantic import ValidationError

from blocks import ReleasePolicyBlock, as_model
from switchyard.core.hooks import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_HTTP_TIMEOUT_S,
    CommandHook,
    HookResult,
    HttpHook,
    ReleaseHooks,
    hook_environment,
    mask,
    secret_values,
    tail,
)
from switchyard.core.release_report import ReleaseSummary
from switchyard.core.reports import release_report
from switchyard.core.rollout import (
    ClearCanary,
    PrepareIdle,
    ReleasePolicy,
    ReleaseProgress,
    SmokeTest,
    next_action,
    pre_deploy_due,
)
from switchyard.core.state import ImageObservation, InstanceObservation
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import V1, V2, observed, scale_set
from tests.unit.core.test_rollout import REQUEST, TARGET

AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

POLICY_YAML = """
strategy: canary
hooks:
  pre_deploy:
    command: [python3, migrations/expand.py, --apply]
    working_dir: apps/sample
  post_promote:
    url: https://migrations.internal/contract
    method: POST
    expect_status: 204
"""


# Configuration ------------------------------------------------------------------------------------


def test_a_policy_in_fleet_yaml_form_names_each_hook_by_its_own_field() -> None:
    policy = ReleasePolicy.model_validate(yaml.safe_load(POLICY_YAML))
    pre, post = policy.hooks.pre_deploy, policy.hooks.post_promote
    assert isinstance(pre, CommandHook) and pre.command[1] == "migrations/expand.py"
    assert pre.working_dir == "apps/sample" and pre.timeout_s == DEFAULT_COMMAND_TIMEOUT_S
    assert isinstance(post, HttpHook) and (post.method, post.expect_status) == ("POST", 204)
    assert post.timeout_s == DEFAULT_HTTP_TIMEOUT_S


def test_a_policy_without_hooks_has_none() -> None:
    assert ReleasePolicy().hooks == ReleaseHooks()
    assert ReleasePolicy().hooks.get("pre_deploy") is None


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"command": "python3 migrate.py"}, "hooks run without a shell, so give the argv as a list"),
        ({"command": []}, "at least 1 item"),
        ({"command": [""]}, "first element (the program) is empty"),
        ({"url": "ftp://example.org/x"}, "is not an http:// or https:// URL"),
        ({"url": "https:///no-host"}, "is not an http:// or https:// URL"),
        ({"url": "https://example.org", "method": "TRACE"}, "'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"),
        ({"url": "https://example.org", "expect_status": 700}, "less than or equal to 599"),
        ({"command": ["true"], "timeout_s": 0}, "greater than 0"),
        ({"command": ["true"], "url": "https://example.org"}, "either a command"),
        ({"script": "migrate.sh"}, "either a command"),
        ({"command": ["true"], "shell": True}, "Extra inputs are not permitted"),
    ],
)
def test_bad_hook_configuration_is_refused_when_the_policy_loads_with_the_field_named(
    hook: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        ReleasePolicy.model_validate({"hooks": {"pre_deploy": hook}})
    assert message in str(error.value)
    assert "hooks.pre_deploy" in str(error.value)


def test_an_unknown_hook_point_is_refused() -> None:
    with pytest.raises(ValidationError, match="pre_deploi"):
        ReleasePolicy.model_validate({"hooks": {"pre_deploi": {"command": ["true"]}}})


def test_hooks_survive_the_release_policy_block_and_its_ui_schema() -> None:
    """What the UI edits is the block: it must carry the hooks both ways and describe them."""
    policy = ReleasePolicy.model_validate(yaml.safe_load(POLICY_YAML))
    block = ReleasePolicyBlock(**policy.model_dump())
    assert as_model(ReleasePolicy, block) == policy
    schema = ReleasePolicyBlock.model_json_schema()
    assert {"CommandHook", "HttpHook", "ReleaseHooks"} <= set(schema["definitions"])
    with pytest.raises(ValidationError, match="either a command"):
        ReleasePolicyBlock(hooks={"post_promote": {"nothing": 1}})


def test_an_http_hook_never_shows_credentials_in_its_url() -> None:
    hook = HttpHook(url="https://deploy:s3cr3t-pass@migrations.internal:8443/expand?dry=0")
    assert hook.describe() == "POST https://migrations.internal:8443/expand?dry=0"


# What a hook is given, and what of its output is kept --------------------------------------------


def test_a_command_hook_gets_the_workers_environment_and_the_release_it_runs_for() -> None:
    env = hook_environment(
        {"PATH": "/usr/bin", "SWITCHYARD_HOOK": "stale"},
        service="shop",
        environment="production",
        image_version=V2,
        hook="pre_deploy",
    )
    assert env == {
        "PATH": "/usr/bin",
        "SWITCHYARD_SERVICE": "shop",
        "SWITCHYARD_ENVIRONMENT": "production",
        "SWITCHYARD_IMAGE_VERSION": V2,
        "SWITCHYARD_HOOK": "pre_deploy",
    }


def test_secret_named_variables_are_masked_in_output_and_settings_are_not() -> None:
    env = {
        "DATABASE_PASSWORD": "hunter2-long",
        "API_KEY": "abcdef123456",
        "PGCONNECTION_STRING": "postgres://u:p@db/x",
        "SECRET_FLAG": "1",  # too short to be a secret worth garbling output for
        "PATH": "/usr/bin",
    }
    secrets = secret_values(env)
    assert set(secrets) == {"hunter2-long", "abcdef123456", "postgres://u:p@db/x"}
    assert mask("connect postgres://u:p@db/x with hunter2-long on /usr/bin 1", secrets) == (
        "connect *** with *** on /usr/bin 1"
    )


def test_the_tail_of_long_output_keeps_the_end_and_says_so() -> None:
    assert tail("short\n\n") == "short"
    kept = tail("x" * 50 + "the error", limit=12)
    assert kept == "[... earlier output not shown]\nxxxthe error"
    assert tail("the end", cut=True).startswith("[... earlier output not shown]\n")


# When pre_deploy runs -----------------------------------------------------------------------------


def test_pre_deploy_is_due_before_the_first_preparation_of_the_idle_color() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0))
    action = next_action(state, TARGET, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert isinstance(action, PrepareIdle)
    assert pre_deploy_due(state, action, V2, ReleaseProgress())


def test_pre_deploy_is_due_when_the_idle_color_still_runs_an_older_image() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V1, 3))
    action = next_action(state, TARGET, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert isinstance(action, PrepareIdle)
    assert pre_deploy_due(state, action, V2, ReleaseProgress())


def test_a_rerun_that_finds_the_image_partly_prepared_does_not_run_pre_deploy_again() -> None:
    """Nothing is prepared before pre_deploy passed, so an idle instance on the image proves it did."""
    green = scale_set(Color.GREEN, V1, 3)
    instances = [green.instances[0].model_copy(update={"image_version": V2}), *green.instances[1:]]
    state = observed(scale_set(Color.BLUE, V1, 3), green.model_copy(update={"instances": instances}))
    action = next_action(state, TARGET, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert isinstance(action, PrepareIdle)
    assert not pre_deploy_due(state, action, V2, ReleaseProgress())


def test_pre_deploy_runs_once_per_run_even_if_preparation_is_asked_again() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0))
    action = next_action(state, TARGET, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert not pre_deploy_due(state, action, V2, ReleaseProgress(pre_deploy_passed_for=V2))


def test_pre_deploy_is_not_due_for_any_other_step() -> None:
    prepared = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3))
    smoke = next_action(prepared, TARGET, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert isinstance(smoke, SmokeTest)
    assert not pre_deploy_due(prepared, smoke, V2, ReleaseProgress())
    clear = ClearCanary(reason="leftover")
    assert not pre_deploy_due(prepared, clear, V2, ReleaseProgress())
    live = observed(scale_set(Color.BLUE, V2, 3), scale_set(Color.GREEN, V1, 3))
    other = ImageObservation(gallery_version=V2, exists=True)
    done = next_action(live, other, REQUEST, ReleasePolicy(), ReleaseProgress())
    assert not pre_deploy_due(live, done, V2, ReleaseProgress())


def test_pre_deploy_is_not_due_for_a_preparation_of_another_image() -> None:
    state = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, None, 0))
    action = PrepareIdle(color=Color.GREEN, image_version=V1, capacity=3, reason="another image")
    assert not pre_deploy_due(state, action, V2, ReleaseProgress())


def test_instances_without_a_known_image_do_not_count_as_prepared() -> None:
    green = scale_set(Color.GREEN, V1, 1)
    unknown = InstanceObservation.model_validate({**green.instances[0].model_dump(), "image_version": None})
    state = observed(scale_set(Color.BLUE, V1, 3), green.model_copy(update={"instances": [unknown]}))
    action = PrepareIdle(color=Color.GREEN, image_version=V2, capacity=3, reason="prepare")
    assert pre_deploy_due(state, action, V2, ReleaseProgress())


# In the release summary ---------------------------------------------------------------------------


def result(**changes: object) -> HookResult:
    values: dict[str, object] = {
        "hook": "post_promote",
        "kind": "command",
        "target": "python3 contract.py",
        "passed": False,
        "detail": "exit code 3 after 0.2 s",
        "started_at": AT,
        "duration_s": 0.2,
        "exit_code": 3,
        "stdout_tail": "dropping column legacy_id",
        "stderr_tail": "column legacy_id | still in use ```",
    }
    return HookResult.model_validate({**values, **changes})


def test_the_release_summary_has_a_hooks_section_with_the_end_of_each_output() -> None:
    summary = ReleaseSummary(
        service="shop",
        environment="production",
        image_version=V2,
        strategy="canary",
        started_at=AT,
        outcome="promoted",
        hooks=[result(hook="pre_deploy", passed=True, detail="exit code 0 after 0.1 s", stderr_tail=""), result()],
        warnings=["the post_promote hook `python3 contract.py` failed (exit code 3 after 0.2 s)"],
    )
    report = release_report(summary)
    markdown = report.markdown
    assert markdown.startswith("# ⚠️ Release of shop")
    assert "**Warning:** the post_promote hook `python3 contract.py` failed" in markdown
    assert "## Hooks" in markdown
    assert "| pre_deploy | `python3 contract.py` | ✅ passed | exit code 0 after 0.1 s |" in markdown
    assert "| post_promote | `python3 contract.py` | ❌ failed | exit code 3 after 0.2 s |" in markdown
    # The output's own backticks cannot close the block it is shown in.
    assert "````\ncolumn legacy_id | still in use ```\n````" in markdown
    assert report.description.endswith("promoted (with warnings)")


def test_a_refused_release_reads_as_refused() -> None:
    summary = ReleaseSummary(
        service="shop",
        environment="production",
        image_version=V2,
        strategy="canary",
        started_at=AT,
        outcome="refused",
        outcome_detail="Refused: the pre_deploy hook failed",
        hooks=[result(hook="pre_deploy", kind="http", target="POST https://m/x", stderr_tail="", exit_code=None)],
    )
    markdown = release_report(summary).markdown
    assert markdown.startswith("# 🛑 Release of shop") and "**REFUSED**" in markdown
    assert "**pre_deploy response** (the end):" in markdown
