"""fleet.yaml as a person writes it: each environment names the release policy its releases use, and
a name that no policy has is refused when the file loads, not when a release starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchyard.checkout import FLEET_FILE
from switchyard.core.fleet import FleetError, load_fleet
from switchyard.core.topology import Color, Topology
from switchyard.images.artifact import load_app_config


def fleet_file(tmp_path: Path, **environment_changes: dict[str, object]) -> Path:
    data = yaml.safe_load(FLEET_FILE.read_text())
    for name, changes in environment_changes.items():
        data["environments"][name].update(changes)
    data["release_policies"]["quiet"] = {"strategy": "blue-green"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_environment_uses_the_default_policy_unless_it_names_another(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_file(tmp_path, staging={"release_policy": "quiet"}), root=tmp_path)
    assert fleet.environments["staging"].release_policy == "quiet"
    assert fleet.environments["production"].release_policy == "default"
    assert fleet.release_policies["quiet"].strategy.value == "blue-green"


def test_an_environment_naming_an_unknown_policy_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, production={"release_policy": "carefull"})
    with pytest.raises(FleetError) as refused:
        load_fleet(path, root=tmp_path)
    message = str(refused.value)
    assert "production names release_policy 'carefull'" in message
    assert "it has: default, quiet" in message


# The repository's own fleet -----------------------------------------------------------------------


def test_the_fleet_has_two_services_that_differ_on_scale_sets_and_gateways_of_their_own() -> None:
    fleet = load_fleet(FLEET_FILE, root=FLEET_FILE.parents[1])
    sample, catalog = fleet.services["sample"], fleet.services["catalog"]

    assert (sample.service_port, sample.health_path) != (catalog.service_port, catalog.health_path)
    assert sample.service_port != catalog.service_port and sample.health_path != catalog.health_path
    for environment in fleet.environments:
        ours, theirs = (Topology(service=s.name, environment=environment) for s in (sample, catalog))
        assert ours.gateway != theirs.gateway
        assert {ours.scale_set(c) for c in Color}.isdisjoint({theirs.scale_set(c) for c in Color})
    # Each app says what its service is configured for: the image build checks the same, at the commit.
    for service in (sample, catalog):
        app = load_app_config(Path(service.app_dir))
        assert (app.service_port, app.health_path) == (service.service_port, service.health_path), service.name
        assert fleet.recipe(service.name).service == service.name


def test_staging_synthetic_load_requests_each_service_on_its_own_api() -> None:
    fleet = load_fleet(FLEET_FILE, root=FLEET_FILE.parents[1])
    load = fleet.release_policies[fleet.environments["staging"].release_policy].synthetic_load
    assert load is not None

    paths = {name: load.for_service(service.synthetic_load_path).path for name, service in fleet.services.items()}

    assert paths == {"sample": "/work/echo", "catalog": "/catalog/items"}
    assert load.for_service("/catalog/items").rate_per_s == load.rate_per_s  # only the path is the service's


def test_two_services_on_one_frontend_port_of_the_emulator_are_refused_naming_both(tmp_path: Path) -> None:
    data = yaml.safe_load(FLEET_FILE.read_text())
    data["services"]["catalog"]["frontend_ports"]["staging"]["test"] = 18180  # sample's staging production port
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    with pytest.raises(FleetError) as refused:
        load_fleet(path, root=tmp_path)

    message = " ".join(str(refused.value).split())
    assert "each listener needs a frontend port of its own" in message
    assert "port 18180: sample's staging production listener and catalog's staging test listener" in message
