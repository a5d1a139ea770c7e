"""prefect.yaml (the local stack's workers, which run from this checkout) and prefect.remote.yaml
(workers elsewhere, which clone the repository at a ref) describe the same deployments; only how a
run gets the code, and which work pool, differ."""

from __future__ import annotations

from typing import Any

import yaml

from switchyard.checkout import PREFECT_FILE, REPO_ROOT

REMOTE_FILE = REPO_ROOT / "prefect.remote.yaml"
STEPS = "prefect.deployments.steps"


def _load(path: Any) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def test_the_remote_file_has_the_same_deployments_but_for_the_pool() -> None:
    local, remote = _load(PREFECT_FILE), _load(REMOTE_FILE)

    def comparable(spec: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in d.items() if k != "work_pool"} for d in spec["deployments"]]

    assert comparable(remote) == comparable(local)
    assert {d["work_pool"]["name"] for d in local["deployments"]} == {"switchyard-local"}
    assert {d["work_pool"]["name"] for d in remote["deployments"]} == {"switchyard"}


def test_local_runs_move_into_the_checkout_and_remote_runs_clone_the_configured_ref() -> None:
    (local_step,) = _load(PREFECT_FILE)["pull"]
    assert local_step == {f"{STEPS}.set_working_directory": {"directory": "{{ $SWITCHYARD_REPO_ROOT }}"}}
    (remote_step,) = _load(REMOTE_FILE)["pull"]
    assert remote_step == {
        f"{STEPS}.git_clone": {
            "repository": "{{ $SWITCHYARD_GIT_REPOSITORY }}",
            "branch": "{{ $SWITCHYARD_GIT_REF }}",
        }
    }


def test_the_remote_pull_step_clones_the_ref_the_environment_names(tmp_path: Any, monkeypatch: Any) -> None:
    """What a worker elsewhere does when a run starts: Prefect's own pull-step runner, a real git."""
    import asyncio
    import os
    import subprocess

    from prefect.deployments.steps.core import run_steps

    origin = tmp_path / "origin"
    (origin / "flows").mkdir(parents=True)
    (origin / "flows" / "marker.py").write_text("RELEASED = True\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(origin)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "release"], check=True)
    subprocess.run([*git, "branch", "release-2026.11"], check=True)
    (origin / "flows" / "marker.py").write_text("RELEASED = False\n")
    subprocess.run([*git, "commit", "-qam", "work in progress on main"], check=True)

    monkeypatch.setenv("SWITCHYARD_GIT_REPOSITORY", origin.as_uri())
    monkeypatch.setenv("SWITCHYARD_GIT_REF", "release-2026.11")
    work = tmp_path / "run"
    work.mkdir()
    monkeypatch.chdir(work)
    output = asyncio.run(run_steps(_load(REMOTE_FILE)["pull"]))

    checkout = os.path.join(work, output["directory"])
    with open(os.path.join(checkout, "flows", "marker.py")) as marker:
        assert marker.read() == "RELEASED = True\n"  # the ref named, not main's head
