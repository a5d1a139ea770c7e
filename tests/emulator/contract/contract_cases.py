"""The contract test's registry of cases (one per REST example) and what the cases share: how a
refusal is recorded, and how two answers are compared field by field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError
from contract_world import World


def eventually(check: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout} s")


@dataclass
class Refusal:
    status: int
    code: str
    target: str | None


@dataclass
class Case:
    run: Callable[[World, dict[str, Any]], tuple[Any, Any]]
    refusal: Refusal | None = None
    missing: tuple[str, ...] = ()  # path prefixes; "*" = anything (generated minimum-set examples)
    extra: tuple[str, ...] = ()


CASES: dict[str, Case] = {}


def case(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(run: Callable[..., Any]) -> Callable[..., Any]:
        CASES[name] = Case(run=run, **kwargs)
        return run

    return register


def as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return dict(value.as_dict())


def paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path set in a JSON-like value ("a.b", lists as "a[]")."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            found |= paths(item, path)
    elif isinstance(value, list):
        for item in value:
            found |= paths(item, f"{prefix}[]")
    return found


def covered(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "*" or path == p or path.startswith(p + ".") or path.startswith(p + "[]") for p in prefixes)


def refused_with(call: Callable[[], Any]) -> Refusal | None:
    try:
        call()
    except HttpResponseError as exc:
        error = exc.error
        return Refusal(exc.status_code or 0, (error.code or "") if error else "", error.target if error else None)
    return None


def param_body(example: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in example["parameters"].values() if isinstance(v, dict))
