"""The sequential test a watch may act on before its data is complete (switchyard.core.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from switchyard.core.stats import anytime_share_p_value

LOOKS = 1000  # asked after every request, as often as any watch could ask


def ever_below(true_share: float, allowed_share: float, level: float, runs: int, seed: int) -> float:
    """The share of simulated canaries for which the p-value, asked after every request, ever fell to `level`."""
    rng = np.random.default_rng(seed)
    hits = np.cumsum(rng.random((runs, LOOKS)) < true_share, axis=1)
    said_above = 0
    for run in hits:
        if any(anytime_share_p_value(int(h), n, allowed_share) <= level for n, h in enumerate(run, start=1)):
            said_above += 1
    return said_above / runs


@pytest.mark.parametrize(("true_share", "allowed_share"), [(0.01, 0.01), (0.05, 0.05), (0.005, 0.01)])
def test_a_canary_within_its_slo_is_called_above_it_no_more_often_than_the_level_however_often_it_is_asked(
    true_share: float, allowed_share: float
) -> None:
    # A fixed-sample binomial test asked this often says "above" on about a quarter of these runs.
    assert ever_below(true_share, allowed_share, level=0.05, runs=200, seed=7) <= 0.05


def test_a_clearly_failing_canary_is_called_above_its_slo_within_a_few_hundred_requests() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        errors = np.cumsum(rng.random(300) < 0.10)  # 10 % errors against a 1 % SLO
        assert any(anytime_share_p_value(int(e), n, 0.01) <= 0.001 for n, e in enumerate(errors, start=1))


def test_no_errors_is_no_evidence_and_bad_counts_are_refused() -> None:
    assert anytime_share_p_value(0, 10_000, 0.01) == 1.0
    assert anytime_share_p_value(0, 0, 0.01) == 1.0
    with pytest.raises(ValueError, match="hits must be within"):
        anytime_share_p_value(5, 4, 0.01)
    with pytest.raises(ValueError, match="allowed_share must be in"):
        anytime_share_p_value(1, 4, 1.0)


def test_an_slo_of_no_errors_at_all_is_disproved_by_the_first_error() -> None:
    assert anytime_share_p_value(1, 10_000, 0.0) == 0.0
    assert anytime_share_p_value(0, 10_000, 0.0) == 1.0
