"""fleet.yaml as a person writes it: each environment names the release policy its releases use, and
a name that no policy has is refused when the file loads, not when a release starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchyard.checkout import FLEET_FILE
from switchyard.core.fleet import FleetError, load_fleet


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
