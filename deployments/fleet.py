"""The fleet: services and environments, seeded from fleet.yaml into Prefect blocks.

fleet.yaml is the starting point of a fresh stack; the blocks are the configuration from then
on (users edit them in the UI), so seeding creates missing blocks and never overwrites one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks import (
    AzureEnvironmentBlock,
    ImageRecipeBlock,
    ReleasePolicyBlock,
    ScanPolicyBlock,
    ServiceBlock,
)
from switchyard.core.config import AzureEnvironment, ImageRecipe, ServiceConfig
from switchyard.core.rollout import ReleasePolicy
from switchyard.core.scan_policy import ScanConfiguration

REPO_ROOT = Path(__file__).resolve().parents[1]
FLEET_FILE = REPO_ROOT / "deployments" / "fleet.yaml"


class FleetError(ValueError):
    """fleet.yaml is missing or invalid."""


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: dict[str, AzureEnvironment]
    services: dict[str, ServiceConfig]
    release_policies: dict[str, ReleasePolicy] = Field(default_factory=lambda: {"default": ReleasePolicy()})
    scan_policies: dict[str, ScanConfiguration]
    image_recipes: dict[str, ImageRecipe] = Field(default_factory=dict)

    def recipe(self, service: str) -> ImageRecipe:
        return self.image_recipes.get(service) or ImageRecipe(service=service)

    def blocks(self) -> list[tuple[str, Block]]:
        """(document name, block) for every entry."""
        entries: list[tuple[str, Block]] = []
        entries += [(n, AzureEnvironmentBlock(**e.model_dump())) for n, e in self.environments.items()]
        entries += [(n, ServiceBlock(**s.model_dump())) for n, s in self.services.items()]
        entries += [(n, ReleasePolicyBlock(**p.model_dump())) for n, p in self.release_policies.items()]
        entries += [(n, ScanPolicyBlock(**p.model_dump())) for n, p in self.scan_policies.items()]
        entries += [(n, ImageRecipeBlock(**self.recipe(n).model_dump())) for n in self.services]
        return entries


def _absolute(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Paths in fleet.yaml are relative to the repository root."""
    for environment in (data.get("environments") or {}).values():
        if isinstance(environment, dict) and environment.get("emulator_file"):
            environment["emulator_file"] = str((root / environment["emulator_file"]).resolve())
    for service in (data.get("services") or {}).values():
        if isinstance(service, dict) and service.get("app_dir"):
            service["app_dir"] = str((root / service["app_dir"]).resolve())
    for scan in (data.get("scan_policies") or {}).values():
        if isinstance(scan, dict):
            scan["osv_databases"] = [str((root / d).resolve()) for d in scan.get("osv_databases") or []]
            if scan.get("trivy_cache_dir"):
                scan["trivy_cache_dir"] = str((root / scan["trivy_cache_dir"]).resolve())
    return data


def load_fleet(path: Path = FLEET_FILE, *, root: Path = REPO_ROOT) -> Fleet:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FleetError(f"fleet file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise FleetError(f"fleet file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise FleetError(f"fleet file {path} must be a mapping with environments and services")
    for kind in ("environments", "services"):
        for name, entry in (data.get(kind) or {}).items():
            if isinstance(entry, dict):
                entry.setdefault("name", name)
    try:
        return Fleet.model_validate(_absolute(data, root))
    except ValidationError as error:
        raise FleetError(f"fleet file {path} is invalid:\n{error}") from None


async def seed_blocks(fleet: Fleet) -> list[str]:
    """Create the blocks fleet.yaml describes that do not exist yet; return what was created."""
    created: list[str] = []
    for name, block in fleet.blocks():
        try:
            await type(block).aload(name)
            continue
        except ValueError:
            pass  # no such document yet
        await block.asave(name)
        created.append(f"{block.get_block_type_slug()}/{name}")
    return created
