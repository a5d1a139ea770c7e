"""Prefect Block types: the configuration users edit in the Prefect UI.

Each block *is* the switchyard.core model it names (multiple inheritance), so what the UI saves
is validated by the same code the flows use, and invalid values are refused with the field named.
Register them with `prefect block register -m blocks` (`switchyard up` does).
"""

from __future__ import annotations

from prefect.blocks.core import Block

from switchyard.core.config import AzureEnvironment, ImageRecipe, ServiceConfig
from switchyard.core.rollout import ReleasePolicy
from switchyard.core.scan_policy import ScanConfiguration


class AzureEnvironmentBlock(Block, AzureEnvironment):
    """Where an environment lives in Azure (or the local emulator) and how to authenticate."""

    _block_type_name = "switchyard Azure environment"
    _block_type_slug = "switchyard-azure-environment"
    _description = "An Azure environment (subscription, resource group, location) and its credentials."


class ServiceBlock(Block, ServiceConfig):
    """A service of the fleet: topology names, ports, health path, capacity, autoscale."""

    _block_type_name = "switchyard service"
    _block_type_slug = "switchyard-service"
    _description = "A service switchyard delivers: its app, ports, capacity and autoscale."


class ReleasePolicyBlock(Block, ReleasePolicy):
    """How releases proceed: strategy, canary steps, analysis window, SLOs, smoke checks, approval."""

    _block_type_name = "switchyard release policy"
    _block_type_slug = "switchyard-release-policy"
    _description = "Strategy, canary steps, analysis window, SLOs, smoke checks, scale-down delay, approval."


class ScanPolicyBlock(Block, ScanConfiguration):
    """What the image scan gate lets through, and where the scanners find their data."""

    _block_type_name = "switchyard scan policy"
    _block_type_slug = "switchyard-scan-policy"
    _description = "Severity thresholds per finding kind, allowlist with reasons and expiry, gate mode."


class ImageRecipeBlock(Block, ImageRecipe):
    """How a service's image is built."""

    _block_type_name = "switchyard image recipe"
    _block_type_slug = "switchyard-image-recipe"
    _description = "Base image, fault profile and Packer timeout of a service's image."


ALL_BLOCKS: tuple[type[Block], ...] = (
    AzureEnvironmentBlock,
    ServiceBlock,
    ReleasePolicyBlock,
    ScanPolicyBlock,
    ImageRecipeBlock,
)
