"""End-to-end fixtures: one real Prefect API (the test harness), one real emulator, the fleet as blocks.

Everything here is shared by the session: the Prefect harness costs seconds to start, and the
emulator holds the state the flows build on (the gallery, the topologies).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks.seed import seed_blocks
from switchyard.checkout import checkout_fleet
from switchyard.core.config import FrontendPorts, ImageRecipe
from switchyard.core.fleet import Fleet
from switchyard.core.hooks import CommandHook, ReleaseHooks
from switchyard.core.rollout import Strategy
from switchyard.core.scan_policy import ScanConfiguration
from switchyard.core.stages import PerformanceTest
from switchyard.stack.prefect_server import PrefectServer
from switchyard_emulator.testing import EmulatorHandle, free_port, run_emulator
from tests.e2e.stack_support import TEST_RELEASE_POLICY, TEST_SLO

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server: its services (the lease repossessor) are part of what is tested."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-home"))
    server.start()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # for the subprocesses tests start
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path_factory.mktemp("e2e-emulator"), extra_args=["--lro-retry-after", "0"]) as handle:
        yield handle


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("switchyard-state")
    previous = os.environ.get("SWITCHYARD_STATE_DIR")
    os.environ["SWITCHYARD_STATE_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("SWITCHYARD_STATE_DIR", None)
    else:
        os.environ["SWITCHYARD_STATE_DIR"] = previous


def app_repository(root: Path, app: Path) -> Path:
    """A git repository of its own holding a copy of ``app`` as apps/<name>, committed once."""
    target = root / "apps" / app.name
    shutil.copytree(app, target, ignore=shutil.ignore_patterns("__pycache__"))
    identity = ["-c", "user.name=switchyard tests", "-c", "user.email=tests@switchyard.invalid"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "the app"]):
        subprocess.run(["git", "-C", str(root), *identity, *command], check=True, capture_output=True, timeout=30)
    return target


@pytest.fixture(scope="session")
def fleet(
    prefect_api: str,
    emulator: EmulatorHandle,
    state_dir: Path,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Fleet:
    """The repository's fleet.yaml, pointed at the test emulator and free ports, registered as blocks.

    Besides `sample`, more services run the same app so that tests can own a topology each:
    `shop` (releases), `cart` (bad input), `broken` (a template Packer rejects), `till` (approval),
    `depot` (quota), `ledger` (rollbacks racing releases), `kiosk` (releases killed and restarted),
    `quay` (staging without users), `pier` (test stages), `vulnerable` (an app with a critical
    advisory), `hardened` (the compliance gate), `tampered` (a changed artifact) and `workdir` (an app
    in a repository of its own, whose working tree a test changes without committing).
    """
    fleet = checkout_fleet()
    # The services below are clones of `sample` without its database and migrations (those have a
    # test of their own, test_expand_contract.py): a service's own hooks would replace the policies'
    # that test_release_hooks.py tests.
    fleet.services["sample"] = fleet.services["sample"].model_copy(update={"hooks": ReleaseHooks(), "database": {}})
    emulator_file = str(emulator.state_dir / "emulator.json")
    for name, environment in fleet.environments.items():
        # a short soak: the chains of test_routine.py still watch staging before production
        soak = {"soak_s": 2} if environment.soak_s else {}
        fleet.environments[name] = environment.model_copy(update={"emulator_file": emulator_file, **soak})
    sample = fleet.services["sample"]
    services = ("shop", "cart", "broken", "till", "depot", "ledger", "kiosk", "quay", "pier", "hardened", "tampered")
    for name in services:
        fleet.services[name] = sample.model_copy(update={"name": name})
    workdir_app = app_repository(tmp_path_factory.mktemp("workdir-repo"), Path(sample.app_dir))
    fleet.services["workdir"] = sample.model_copy(update={"name": "workdir", "app_dir": str(workdir_app)})
    # The test stages' own service runs the sample's integration tests (fleet.yaml shows how).
    fleet.services["pier"] = fleet.services["pier"].model_copy(
        update={"integration_test": CommandHook(command=["python3", "apps/sample/tests/integration.py"], timeout_s=60)}
    )
    fleet.services["vulnerable"] = sample.model_copy(
        update={"name": "vulnerable", "app_dir": str(FIXTURES / "apps" / "vulnerable")}
    )
    # switchyard's own local template with one argument the null builder does not have
    broken = tmp_path_factory.mktemp("templates") / "local-broken.pkr.hcl"
    template = (repo_root / "images" / "local.pkr.hcl").read_text()
    broken.write_text(template.replace('communicator = "none"', 'communicator = "none"\n  bogus_field  = 1', 1))
    fleet.image_recipes["broken"] = ImageRecipe(service="broken", template=str(broken))
    for name, service in list(fleet.services.items()):
        ports = {env: FrontendPorts(production=free_port(), test=free_port()) for env in fleet.environments}
        fleet.services[name] = service.model_copy(update={"frontend_ports": ports, "capacity": 3})
    for name, policy in fleet.release_policies.items():
        fleet.release_policies[name] = policy.model_validate(
            {**policy.model_dump(), **TEST_RELEASE_POLICY, "slo": {**policy.slo.model_dump(), **TEST_SLO}}
        )
    default = fleet.release_policies["default"]
    fleet.release_policies["impossible-steps"] = default.model_copy(update={"canary_steps": [0.25, 0.95]})
    fleet.release_policies["needs-approval"] = default.model_copy(
        update={"strategy": Strategy.BLUE_GREEN, "approval_required": True, "approval_timeout_s": 120}
    )
    # Long enough windows that a person's rollback lands while the release still runs.
    fleet.release_policies["slow-canary"] = default.model_copy(
        update={"strategy": Strategy.CANARY, "canary_steps": [0.25], "analysis_window_s": 25}
    )
    fleet.release_policies["slow-promotion"] = default.model_copy(
        update={"strategy": Strategy.BLUE_GREEN, "promoted_analysis_window_s": 25}
    )
    fleet.release_policies["staging-without-load"] = fleet.release_policies["staging"].model_copy(
        update={"synthetic_load": None}
    )
    # Blue-green: the stages run before any user either way, and nothing here sends user traffic.
    fleet.release_policies["without-performance-test"] = default.model_copy(update={"strategy": Strategy.BLUE_GREEN})
    fleet.release_policies["with-performance-test"] = default.model_copy(
        update={
            "strategy": Strategy.BLUE_GREEN,
            "performance_test": PerformanceTest(
                rate_per_s=40, duration_s=3, path="/work/echo", max_p95_ms=150, max_error_rate=0.01
            ),
        }
    )
    fleet.release_policies["approval-times-out"] = default.model_copy(
        update={"canary_steps": [0.25], "approval_required": True, "approval_timeout_s": 3}
    )
    # The default scan policy reads the advisory snapshot switchyard ships, as fleet.yaml says.
    scanning = fleet.scan_policies["default"]
    # Only CRITICAL vulnerabilities fail; the fixture's test advisory is the one critical finding.
    critical_only = {
        **scanning.model_dump(),
        "osv_databases": [*scanning.osv_databases, str(FIXTURES / "osv-extra")],
        "thresholds": {"vulnerability": "CRITICAL"},
        "unknown_counts_as": "LOW",
    }
    fleet.scan_policies["critical-only"] = ScanConfiguration.model_validate(critical_only)
    for name, expires in (("allow-expired", date(2026, 1, 31)), ("allow-valid", date(2099, 12, 31))):
        fleet.scan_policies[name] = ScanConfiguration.model_validate(
            {
                **critical_only,
                "allowlist": [
                    {
                        "id": "SWITCHYARD-TEST-2026-0001",
                        "package": "switchyard-fixture-critical",
                        "reason": "fixture: no fixed version deployable yet",
                        "expires": expires,
                    }
                ],
            }
        )
    # Feature flags (tests/e2e/test_release_flags.py): `flagged` has a shared database in production,
    # and the policy `enable-new-greeting` turns the flag new_greeting on there once a release is promoted.
    fleet.services["flagged"] = sample.model_copy(
        update={
            "name": "flagged",
            "capacity": 3,
            "frontend_ports": {
                env: FrontendPorts(production=free_port(), test=free_port()) for env in fleet.environments
            },
            "database": {"production": "sqlite:///{state_dir}/databases/flagged-production.sqlite3"},
        }
    )
    fleet.release_policies["enable-new-greeting"] = default.model_copy(
        update={"strategy": Strategy.BLUE_GREEN, "enable_flags": ["new_greeting"]}
    )
    asyncio.run(seed_blocks(fleet))
    return fleet
