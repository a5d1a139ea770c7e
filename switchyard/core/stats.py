"""Small statistics helpers shared by the canary judge and the DORA report.

Pure functions on plain numbers; no I/O. Two percentile definitions live here on purpose, because
they answer different questions:

* `nearest_rank_percentile` is the one latency SLOs use. "p95 <= 500 ms" then means exactly
  "at least 95% of the requests took at most 500 ms", so a breach can be counted in requests and
  reasoned about before the sample is complete (see switchyard.core.canary_slo).
* `interpolated_percentile` (linear interpolation between order statistics, as numpy's default,
  Excel's PERCENTILE.INC and BigQuery's PERCENTILE_CONT) is the one DORA dashboards such as Four
  Keys use for lead time and restore time; its median is the textbook median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Guards ceil(q * n) against binary floating point: 0.95 * 100 must give rank 95, not 96.
_RANK_EPSILON = 1e-9


def nearest_rank(quantile: float, sample_size: int) -> int:
    """The 1-based rank of the nearest-rank `quantile` in a sample of `sample_size` values."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    return max(1, math.ceil(quantile * sample_size - _RANK_EPSILON))


def nearest_rank_percentile(values: Sequence[float] | np.ndarray, quantile: float) -> float | None:
    """The smallest value such that at least `quantile` of the values are at most it.

    None for an empty sample (there is no percentile of nothing)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    rank = nearest_rank(quantile, int(data.size))
    # np.partition puts the (rank-1)-th smallest value in place without a full sort.
    return float(np.partition(data, rank - 1)[rank - 1])


def allowed_exceedances(quantile: float, sample_size: int) -> int:
    """How many of `sample_size` values may lie above a limit while the nearest-rank `quantile`
    still meets it: the "slow request budget" of a percentile SLO."""
    return sample_size - nearest_rank(quantile, sample_size)


def interpolated_percentile(values: Sequence[float], quantile: float) -> float | None:
    """Linear-interpolation percentile (numpy 'linear'); None for an empty sample."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), quantile * 100.0))


def mean(values: Sequence[float] | np.ndarray) -> float | None:
    data = np.asarray(values, dtype=float)
    return float(data.mean()) if data.size else None


def scipy_stats() -> Any:
    """scipy.stats, imported on first use: importing it costs seconds, and every flow run process
    imports this module (through the release policy) while only a canary's judge needs it."""
    from scipy import stats

    return stats


def clopper_pearson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a binomial proportion.

    Exact rather than Wald so that it stays honest at shares near 0 or 1 and at small counts."""
    if trials < 1:
        raise ValueError("a confidence interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..{trials}, got {successes}")
    interval = scipy_stats().binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def format_p_value(p_value: float) -> str:
    """A p-value for people: fixed point when readable, scientific when tiny, never a bare 0."""
    if p_value <= 0.0:
        # Double precision underflow: the true value is below the smallest representable one.
        return "< 1e-300"
    if p_value < 1e-4:
        return f"{p_value:.1e}"
    return f"{p_value:.4f}"


def anytime_share_p_value(hits: int, trials: int, allowed_share: float) -> float:
    """An always-valid p-value against "the true share of hits is at most `allowed_share`".

    For a watch that asks after every batch of requests whether a share (errors, requests slower
    than a limit) is above what an SLO allows. A fixed-sample test asked that often says "above"
    far more often than its level: asked after each of 2,000 requests at a true share equal to the
    limit, a one-sided binomial test at 0.05 says so on about a quarter of the runs. This one stays
    within its level however often, and whenever, it is asked.

    The statistic is a mixture likelihood ratio (Robbins; Howard et al., "Time-uniform,
    nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021): the likelihood of the
    hits under a share p, averaged over p uniform on (allowed_share, 1], over their likelihood at
    allowed_share. Each ratio for a fixed p above the allowed share is a nonnegative supermartingale
    under any true share at or below it, so their mixture is too, and by Ville's inequality the
    chance that it *ever* reaches 1/alpha is at most alpha: 1 / (the ratio) is a p-value valid at
    every look. Counts are all it needs, so grains of requests serve as well as single requests.
    """
    if trials < 0 or not 0 <= hits <= trials:
        raise ValueError(f"hits must be within 0..trials, got {hits} of {trials}")
    if not 0.0 <= allowed_share < 1.0:
        raise ValueError(f"allowed_share must be in [0, 1), got {allowed_share}")
    if allowed_share == 0.0:
        return 0.0 if hits else 1.0  # a single hit disproves a share of none, at any look
    from scipy import special  # on first use, like scipy_stats()

    a, b = hits + 1, trials - hits + 1
    # log of  integral_{allowed}^{1} p^hits (1-p)^(trials-hits) dp / (1 - allowed)  over  the likelihood at allowed
    upper_mass = float(special.betaincc(a, b, allowed_share))
    if upper_mass <= 0.0:
        return 1.0  # no likelihood above the allowed share at double precision: nothing against it
    log_ratio = (
        float(special.betaln(a, b))
        + math.log(upper_mass)
        - math.log1p(-allowed_share)
        - hits * math.log(allowed_share)
        - (trials - hits) * math.log1p(-allowed_share)
    )
    return 1.0 if log_ratio <= 0.0 else math.exp(-log_ratio)
