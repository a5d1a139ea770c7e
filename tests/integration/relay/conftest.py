"""The relay tests' shared fixtures: one repository, one Prefect API and one relay for the whole
folder (each test uses its own repository name, so sharing is safe)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_API_URL

from tests.integration.relay.relay_support import (
    Relay,
    Repository,
    git,
    relay_config,
    running_relay,
)
from tests.prefect_test_server import prefect_test_server


@pytest.fixture(scope="package")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    repo = Repository(tmp_path_factory.mktemp("git"))
    repo.commit(
        {
            "apps/alpha/VERSION": "1.2.3\n",
            "apps/alpha/app.py": "print('alpha')\n",
            "apps/beta/VERSION": "2.0.0\n",
            "apps/beta/app.py": "print('beta')\n",
            "images/base.pkr.hcl": "# template\n",
            "README.md": "shop\n",
        },
        "first",
    )
    git(repo.origin.parent, "clone", "--quiet", str(repo.origin), str(repo.relay_clone))
    return repo


@pytest.fixture(scope="package")
def prefect_api() -> Iterator[str]:
    with prefect_test_server():
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="package")
def relay(prefect_api: str, repository: Repository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with running_relay(tmp_path_factory.mktemp("relay"), prefect_api, relay_config(repository)) as process:
        yield process
