"""The fleet: services, environments and policies as fleet.yaml describes them.

fleet.yaml is the starting point of a fresh stack; Prefect blocks are the configuration from then
on (users edit them in the UI): blocks/seed.py creates the missing ones and never overwrites one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from switchyard.core.config import AzureEnvironment, ImageRecipe, ServiceConfig
from switchyard.core.rollout import ReleasePolicy
from switchyard.core.scan_policy import ScanConfiguration


class FleetError(ValueError):
    """fleet.yaml is missing or invalid."""


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: dict[str, AzureEnvironment]
    services: dict[str, ServiceConfig]
    release_policies: dict[str, ReleasePolicy] = Field(default_factory=lambda: {"default": ReleasePolicy()})
    scan_policies: dict[str, ScanConfiguration]
    image_recipes: dict[str, ImageRecipe] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _environments_name_known_policies(self) -> Fleet:
        unknown = [
            f"{name} names release_policy {environment.release_policy!r}"
            for name, environment in self.environments.items()
            if environment.release_policy not in self.release_policies
        ]
        if unknown:
            raise ValueError(
                f"{'; '.join(unknown)}, which release_policies does not define (it has: "
                f"{', '.join(sorted(self.release_policies))})"
            )
        return self

    @model_validator(mode="after")
    def _emulator_ports_are_the_services_own(self) -> Fleet:
        """On Azure every gateway has addresses of its own. The emulator serves the gateways of every
        environment it holds on this machine's loopback, so there each listener needs a port of its own."""
        taken: dict[tuple[str, int], str] = {}
        clashes = []
        for name, service in self.services.items():
            for environment, ports in service.frontend_ports.items():
                chosen = self.environments.get(environment)
                if chosen is None or chosen.auth != "emulator":
                    continue
                for listener, port in (("production", ports.production), ("test", ports.test)):
                    this = f"{name}'s {environment} {listener} listener"
                    owner = taken.setdefault((chosen.emulator_file or "", port), this)
                    if owner != this:
                        clashes.append(f"port {port}: {owner} and {this}")
        if clashes:
            raise ValueError(
                "the local emulator serves every gateway on this machine, so each listener needs a frontend "
                "port of its own: " + "; ".join(clashes)
            )
        return self

    def recipe(self, service: str) -> ImageRecipe:
        return self.image_recipes.get(service) or ImageRecipe(service=service)


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


def load_fleet(path: Path, *, root: Path) -> Fleet:
    """The fleet in `path`; relative paths in it are relative to `root` (the repository)."""
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
