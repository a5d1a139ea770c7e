"""Prefect Block types: the configuration users edit in the Prefect UI, and loading it by name.

Each block *is* the switchyard.core model it names (multiple inheritance), so what the UI saves
is validated by the same code the flows use, and invalid values are refused with the field named.
Register them with `prefect block register -m blocks` (`switchyard up` does). Block documents are
looked up by name; a missing one is a user error that names what exists.
"""

from __future__ import annotations

import contextlib
from typing import TypeVar, cast

from prefect.blocks.core import Block
from pydantic import BaseModel

from switchyard.cloud.azure.clients import EmulatorEndpoint
from switchyard.core.bad_input import BadInput
from switchyard.core.config import AzureEnvironment, ImageRecipe, ServiceConfig, ServiceContext
from switchyard.core.fleet_status import FleetMember
from switchyard.core.rollout import ReleasePolicy, Strategy
from switchyard.core.scan_policy import ScanConfiguration
from switchyard.redaction import register_secret


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


# Loading by name ---------------------------------------------------------------------------------

B = TypeVar("B", bound=Block)


class UnknownNameError(BadInput):
    """A service, environment or policy name that no block document has."""


def known_names(block_type: type[Block]) -> list[str]:
    """The names of the saved documents of a block type."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        slug = block_type.get_block_type_slug()
        documents = client.read_block_documents_by_type(slug, include_secrets=False)
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def load_block(block_type: type[B], name: str, kind: str) -> B:
    try:
        block = cast(B, block_type.load(name))  # sync context: load returns the block, not a coroutine
    except ValueError:
        try:
            known = ", ".join(known_names(block_type)) or "none"
        except Exception:  # listing is only a courtesy in the error message
            known = "unknown"
        raise UnknownNameError(
            f"unknown {kind} {name!r}: there is no {block_type.get_block_type_slug()} block named {name!r} "
            f"(known: {known}). Register the fleet with `switchyard fleet apply` or create the block "
            "in the Prefect UI."
        ) from None
    return block


M = TypeVar("M", bound=BaseModel)


def as_model(model: type[M], block: Block) -> M:
    """The plain core model a block is (without the block's own bookkeeping fields)."""
    return model.model_validate(block.model_dump(include=set(model.model_fields)))


def load_environment(name: str) -> AzureEnvironment:
    environment = as_model(AzureEnvironment, load_block(AzureEnvironmentBlock, name, "environment"))
    register_environment_secrets(environment)
    return environment


def load_service(name: str) -> ServiceConfig:
    return as_model(ServiceConfig, load_block(ServiceBlock, name, "service"))


def load_release_policy(name: str) -> ReleasePolicy:
    return as_model(ReleasePolicy, load_block(ReleasePolicyBlock, name, "release policy"))


def release_policy_for(environment: AzureEnvironment, name: str | None, strategy: Strategy | None) -> ReleasePolicy:
    """The policy a release uses: the one named, else the environment's; `strategy` overrides its own."""
    policy = load_release_policy(name or environment.release_policy)
    return policy if strategy is None else policy.model_copy(update={"strategy": strategy})


def load_scan_policy(name: str) -> ScanConfiguration:
    return as_model(ScanConfiguration, load_block(ScanPolicyBlock, name, "scan policy"))


def load_recipe(service: str) -> ImageRecipe:
    try:
        return as_model(ImageRecipe, cast(ImageRecipeBlock, ImageRecipeBlock.load(service)))
    except ValueError:
        return ImageRecipe(service=service)


def load_service_context(service: str, environment: str) -> ServiceContext:
    """A service in an environment it is deployed to (an environment it is not in is refused)."""
    service_config = load_service(service)
    service_config.ports_in(environment)
    return ServiceContext(environment=load_environment(environment), service=service_config)


def fleet_members() -> list[FleetMember]:
    """Every service block x every environment block (and any environment a service names without a
    block of its own): the whole fleet as configured in Prefect, sorted. A pair whose configuration
    cannot be loaded says why instead of raising, so one bad block never hides the rest."""
    services = known_names(ServiceBlock)
    environments = set(known_names(AzureEnvironmentBlock))
    loaded: dict[str, ServiceConfig | str] = {}
    for service in services:
        try:
            loaded[service] = load_service(service)
        except Exception as error:  # an invalid block: its rows say so
            loaded[service] = f"service block {service!r} cannot be loaded: {error}"
        config = loaded[service]
        if isinstance(config, ServiceConfig):
            environments |= set(config.frontend_ports)
    loaded_environments: dict[str, AzureEnvironment | str] = {}
    for environment in sorted(environments):
        try:
            loaded_environments[environment] = load_environment(environment)
        except Exception as error:
            loaded_environments[environment] = f"environment {environment!r} cannot be loaded: {error}"
    members = []
    for service in services:
        config = loaded[service]
        for environment in sorted(environments):
            chosen = loaded_environments[environment]
            if isinstance(config, str):
                members.append(FleetMember(service=service, environment=environment, problem=config))
            elif environment not in config.frontend_ports:
                members.append(FleetMember(service=service, environment=environment))
            elif isinstance(chosen, str):
                members.append(FleetMember(service=service, environment=environment, problem=chosen))
            else:
                context = ServiceContext(environment=chosen, service=config)
                members.append(FleetMember(service=service, environment=environment, context=context))
    return members


def register_environment_secrets(environment: AzureEnvironment) -> None:
    """The secrets an environment holds never reach a log (switchyard/redaction.py)."""
    if environment.client_secret:
        register_secret(environment.client_secret.get_secret_value())
    if environment.auth == "emulator" and environment.emulator_file:
        # An unreadable file fails later, with a better message.
        with contextlib.suppress(Exception):
            register_secret(EmulatorEndpoint.read(environment.emulator_file).token)
