"""The suite's own layout: pytest imports test modules by file name (no __init__.py in tests/), so
two test files with one name anywhere under tests/ fail the whole run at collection."""

from __future__ import annotations

from collections import defaultdict

from tests.datasets import REPO_ROOT


def test_every_test_module_has_a_file_name_of_its_own() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in (REPO_ROOT / "tests").rglob("*.py"):
        if path.name != "conftest.py":
            where[path.name].append(str(path.relative_to(REPO_ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
