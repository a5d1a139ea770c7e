"""Loading configuration from blocks, and the cloud adapter built from it.

Block documents are looked up by name; a missing one is a user error that names what exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from typing import TypeVar, cast

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict

from blocks import (
    AzureEnvironmentBlock,
    ImageRecipeBlock,
    ReleasePolicyBlock,
    ScanPolicyBlock,
    ServiceBlock,
)
from switchyard.cloud.azure import AzureCloud
from switchyard.cloud.connection import EmulatorEndpoint
from switchyard.core.config import AzureEnvironment, ImageRecipe, ServiceConfig
from switchyard.core.rollout import ReleasePolicy
from switchyard.core.scan_policy import ScanConfiguration
from switchyard.core.topology import Topology

B = TypeVar("B", bound=Block)


class UnknownNameError(ValueError):
    """A service, environment or policy name that no block document has."""


def _known(block_type: type[Block]) -> list[str]:
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
            known = ", ".join(_known(block_type)) or "none"
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
    register_secrets(environment)
    return environment


def load_service(name: str) -> ServiceConfig:
    return as_model(ServiceConfig, load_block(ServiceBlock, name, "service"))


def load_release_policy(name: str) -> ReleasePolicy:
    return as_model(ReleasePolicy, load_block(ReleasePolicyBlock, name, "release policy"))


def load_scan_policy(name: str) -> ScanConfiguration:
    return as_model(ScanConfiguration, load_block(ScanPolicyBlock, name, "scan policy"))


def load_recipe(service: str) -> ImageRecipe:
    try:
        return as_model(ImageRecipe, cast(ImageRecipeBlock, ImageRecipeBlock.load(service)))
    except ValueError:
        return ImageRecipe(service=service)


class ServiceContext(BaseModel):
    """One service in one environment: everything a task needs to reach the cloud."""

    model_config = ConfigDict(frozen=True)

    environment: AzureEnvironment
    service: ServiceConfig

    @property
    def topology(self) -> Topology:
        return Topology(service=self.service.name, environment=self.environment.name)

    def fingerprint(self) -> str:
        secret = self.environment.client_secret.get_secret_value() if self.environment.client_secret else ""
        raw = self.model_dump_json() + secret
        return hashlib.sha256(raw.encode()).hexdigest()


_clouds: dict[str, AzureCloud] = {}
_clouds_lock = threading.Lock()


def cloud_for(context: ServiceContext) -> AzureCloud:
    """The adapter for this context, built once per process (SDK clients keep their connections)."""
    key = context.fingerprint()
    with _clouds_lock:
        cloud = _clouds.get(key)
        if cloud is None:
            cloud = _clouds[key] = AzureCloud(context.environment, context.service)
        return cloud


# Secrets -----------------------------------------------------------------------------------------
# Prefect does not redact secrets from logs; this filter does, for every secret switchyard loads.

_secrets: set[str] = set()


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in _secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_filter = RedactSecrets()


def _install_filter() -> None:
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "switchyard", "azure"):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)


def register_secrets(environment: AzureEnvironment) -> None:
    if environment.client_secret:
        _secrets.add(environment.client_secret.get_secret_value())
    if environment.auth == "emulator" and environment.emulator_file:
        # An unreadable file fails later, with a better message.
        with contextlib.suppress(Exception):
            _secrets.add(EmulatorEndpoint.read(environment.emulator_file).token)
    _install_filter()
