"""Every example in tests/fixtures/azure-rest-examples, replayed through the real SDK clients.

For each example: the request is sent as the service team wrote it (names filled in). If the
emulator refuses it, the refusal must be the one documented in tests/emulator/contract/README.md; the
request is then sent again with the documented adaptation. The answer, deserialized by the SDK,
must set the same fields as the example's response, except the documented differences
(`MISSING`: in the example, not in the emulator's answer; `EXTRA`: the other way round). A
documented difference that no longer occurs fails too, so the README stays true.
"""

from __future__ import annotations

# The cases register themselves in CASES when their modules are imported.
import contract_cases_compute  # noqa: F401
import contract_cases_network  # noqa: F401
import pytest
from contract_cases import (
    CASES,
    as_dict,
    covered,
    paths,
)
from contract_world import EXAMPLES, World, load_example

# -- the test --------------------------------------------------------------------------------------


def _all_examples() -> list[str]:
    return sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*.json"))


def test_every_example_has_a_case() -> None:
    assert sorted(CASES) == _all_examples()


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, world: World) -> None:
    spec = CASES[name]
    world.refusal = None
    actual, expected = spec.run(world, load_example(name))
    assert world.refusal == spec.refusal, "the refusal of the original request is the documented one"
    actual_paths, expected_paths = paths(as_dict(actual)), paths(as_dict(expected))
    missing = {p for p in expected_paths - actual_paths if not covered(p, spec.missing)}
    extra = {p for p in actual_paths - expected_paths if not covered(p, spec.extra)}
    assert missing == set(), f"fields of the example's answer the emulator did not set: {sorted(missing)}"
    assert extra == set(), f"fields the emulator set that the example's answer does not: {sorted(extra)}"
    stale = [p for p in spec.missing if p != "*" and not any(covered(q, (p,)) for q in expected_paths - actual_paths)]
    stale += [p for p in spec.extra if p != "*" and not any(covered(q, (p,)) for q in actual_paths - expected_paths)]
    assert stale == [], f"documented differences that no longer occur (update README.md and the case): {stale}"
