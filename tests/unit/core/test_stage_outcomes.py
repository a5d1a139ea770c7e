"""A chain of releases through the environments: which stage stopped it."""

from __future__ import annotations

from switchyard.core.routine import StageOutcome, chain_failure


def stage(environment: str, outcome: str) -> StageOutcome:
    return StageOutcome.model_validate({"environment": environment, "outcome": outcome})


def test_the_first_stage_that_did_not_go_live_stopped_the_chain() -> None:
    stages = [stage("staging", "promoted"), stage("production", "rolled-back"), stage("dr", "not-run")]
    assert chain_failure(stages) == stages[1]
    assert chain_failure([stage("staging", "failed"), stage("production", "not-run")]) == stage("staging", "failed")


def test_a_chain_that_went_live_everywhere_or_was_never_started_has_no_failure() -> None:
    assert chain_failure([stage("staging", "already-live"), stage("production", "promoted")]) is None
    # Not run because the image was never built: the chain itself did not fail (the build did).
    assert chain_failure([stage("staging", "not-run")]) is None
    assert chain_failure([]) is None


def test_only_promoted_and_already_live_stages_succeeded() -> None:
    assert [s.succeeded for s in map(lambda o: stage("x", o), ["promoted", "already-live"])] == [True, True]
    assert not any(stage("x", o).succeeded for o in ("rolled-back", "failed", "not-run"))
