"""The azure builder as the image pipeline would run it: for an Azure environment the flow picks
images/azure.pkr.hcl and passes exactly the variables the template declares, and real Packer
(Debian's 1.6.6, whose azure-arm builder checks its whole configuration offline) accepts them.
The build itself needs Azure; what it leaves (a managed image) is published by the gallery port,
tested against the emulator in tests/integration/cloud/test_gallery_port.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchyard.checkout import REPO_ROOT
from switchyard.core.config import AzureEnvironment, FaultProfile, ImageRecipe
from switchyard.core.versions import ImageVersion
from switchyard.images.azure_image import AzureImageRequest
from switchyard.images.local_image import LocalImageRequest
from switchyard.images.packer import AZURE_TEMPLATE, LOCAL_TEMPLATE, PackerRunner
from tasks.images import ImagePlan, build_request, template_of

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAXsfOsE8trh0NAvE12UTiUqaCx182iU5QpAvgBN1Esf test"
PLAN = ImagePlan(
    service="sample",
    version=ImageVersion.of("debian-12", "2026.12", "1.4.2"),
    git_commit="0123456789abcdef0123456789abcdef01234567",
    fault_profile=FaultProfile(),
)


def azure_environment(**changes: object) -> AzureEnvironment:
    return AzureEnvironment.model_validate(
        {
            "name": "production",
            "auth": "default",
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg-switchyard-production",
            "gallery_resource_group": "rg-switchyard-images",
            "build_resource_group": "rg-switchyard-build",
            "ssh_public_key": SSH_KEY,
            **changes,
        }
    )


def declared_variables(template: Path) -> set[str]:
    return set(re.findall(r'^variable "([a-z_]+)"', template.read_text(), flags=re.M))


def test_an_azure_environment_builds_with_the_azure_template_and_exactly_its_variables(tmp_path: Path) -> None:
    environment = azure_environment()
    app_dir = REPO_ROOT / "apps" / "sample"

    template = template_of(ImageRecipe(service="sample"), environment)
    request = build_request(environment, PLAN, app_dir, tmp_path)

    assert environment.builder == "azure" and template == AZURE_TEMPLATE
    assert isinstance(request, AzureImageRequest)
    variables = request.packer_variables()
    assert set(variables) == declared_variables(AZURE_TEMPLATE)
    assert variables["build_resource_group"] == "rg-switchyard-build"
    assert variables["managed_image_name"] == f"sample-{PLAN.gallery_version}"
    assert (variables["base_image_publisher"], variables["base_image_sku"]) == ("Debian", "12-gen2")
    PackerRunner().validate_template(template, variables=variables)


def test_the_azure_template_makes_a_managed_image_and_downloads_the_scan_inputs_never_a_gallery_version() -> None:
    hcl = AZURE_TEMPLATE.read_text()

    assert "shared_image_gallery_destination" not in hcl  # nothing reaches a gallery before the gate
    assert "managed_image_name                = var.managed_image_name" in hcl
    assert 'direction   = "download"' in hcl and "scan-inputs.sh" in hcl
    # the scan inputs are made before the VM is generalized (deprovision removes the build user)
    assert hcl.index("scan-inputs.sh") < hcl.index("deprovision.sh")


def test_the_emulator_builds_locally_unless_an_environment_says_otherwise(tmp_path: Path) -> None:
    local = azure_environment(auth="emulator", emulator_file="emulator.json", subscription_id=None)
    assert local.builder == "local" and template_of(ImageRecipe(service="sample"), local) == LOCAL_TEMPLATE
    request = build_request(local, PLAN, REPO_ROOT / "apps" / "sample", tmp_path)
    assert isinstance(request, LocalImageRequest)
    assert set(request.packer_variables()) <= declared_variables(LOCAL_TEMPLATE)

    chosen = azure_environment(image_builder="local")
    assert chosen.builder == "local" and template_of(ImageRecipe(service="sample"), chosen) == LOCAL_TEMPLATE


def test_an_azure_build_without_a_build_resource_group_is_refused_before_packer_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names no build_resource_group"):
        build_request(azure_environment(build_resource_group=None), PLAN, REPO_ROOT / "apps" / "sample", tmp_path)
    with pytest.raises(ValueError, match="not a valid Azure resource group name"):
        azure_environment(build_resource_group="bad/group")
