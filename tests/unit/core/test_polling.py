"""How often a wait looks at the cloud: soon at first, then within ARM's read budget."""

from __future__ import annotations

from itertools import accumulate, islice, pairwise, takewhile

import pytest

from switchyard.core.polling import pauses


def test_the_first_looks_come_soon_and_then_slow_down_to_the_cap() -> None:
    first = list(islice(pauses(), 10))

    assert first[0] == 0.5
    assert all(later >= earlier for earlier, later in pairwise(first))
    assert max(first) == 5.0 and first[-1] == 5.0


def test_an_instance_up_within_two_seconds_is_seen_within_three() -> None:
    looks_at = list(takewhile(lambda t: t <= 3.0, accumulate(pauses())))

    assert len(looks_at) >= 3 and looks_at[-1] >= 2.0


def test_a_two_minute_boot_costs_tens_of_looks_not_hundreds() -> None:
    # Each look is about ten ARM reads; ARM refills a subscription's reads at 25 a second.
    looks = list(takewhile(lambda t: t <= 120.0, accumulate(pauses())))

    assert 20 <= len(looks) <= 35


@pytest.mark.parametrize(("first", "most", "growth"), [(0, 5, 2), (6, 5, 2), (1, 5, 0.5)])
def test_pauses_that_would_never_grow_or_never_start_are_refused(first: float, most: float, growth: float) -> None:
    with pytest.raises(ValueError, match="pauses need"):
        next(pauses(first, most, growth))
