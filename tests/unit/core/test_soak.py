"""Staging soak time: what stops a chain from moving on while a version soaks in an environment."""

from __future__ import annotations

from switchyard.core.routine import soak_problem
from switchyard.core.topology import Color
from tests.unit.core.cloud_states import V1, V2, address, observed, scale_set

LIVE_V2 = observed(scale_set(Color.BLUE, V1, 0), scale_set(Color.GREEN, V2, 3), live=Color.GREEN)


def test_a_version_that_serves_production_healthily_holds() -> None:
    assert soak_problem(LIVE_V2, V2) is None


def test_a_rollback_during_the_soak_stops_the_chain() -> None:
    rolled_back = observed(scale_set(Color.BLUE, V1, 3), scale_set(Color.GREEN, V2, 3), live=Color.BLUE)

    assert soak_problem(rolled_back, V2) == f"production runs {V1} now, not {V2} (rolled back or replaced)"


def test_an_unhealthy_instance_during_the_soak_stops_the_chain() -> None:
    sick = observed(
        scale_set(Color.BLUE, V1, 0),
        scale_set(Color.GREEN, V2, 3),
        live=Color.GREEN,
        health={address(Color.GREEN, 2): "Down"},
    )

    assert soak_problem(sick, V2) == f"live instances not healthy: {address(Color.GREEN, 2)}"


def test_nothing_routed_or_nothing_running_stops_the_chain() -> None:
    assert soak_problem(observed(scale_set(Color.BLUE, V1, 0), scale_set(Color.GREEN, V2, 3), live=None), V2) == (
        "production routes to no color"
    )
    empty = observed(scale_set(Color.BLUE, V1, 0), scale_set(Color.GREEN, V2, 0), live=Color.GREEN)
    assert soak_problem(empty, V2) == "the live color green runs no instances"
