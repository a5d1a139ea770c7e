"""Names of everything one service owns in one environment: two colors behind one gateway.

The names are derived, never stored, so every task (and a re-run after a crash) finds the same
resources by asking the cloud about the same names.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,23}$"
_NAME_RE = re.compile(NAME_PATTERN)


class Color(StrEnum):
    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Color:
        return Color.GREEN if self is Color.BLUE else Color.BLUE


def check_name(kind: str, value: str) -> str:
    """Service and environment names end up in Azure resource names: keep them short and plain."""
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{kind} name {value!r} is not valid: use 1-24 characters, lower-case letters, digits and "
            "'-', starting with a letter"
        )
    return value


class Topology(BaseModel):
    """The resource names of `service` in `environment`."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str

    @property
    def prefix(self) -> str:
        return f"{self.service}-{self.environment}"

    def scale_set(self, color: Color) -> str:
        return f"{self.prefix}-{color.value}"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}-agw"

    def autoscale_setting(self, color: Color) -> str:
        """One autoscale setting per color: Azure never lets a setting's target change
        (TargetResourceIdIsImmutable), so the live color's is enabled and the idle one's disabled."""
        return f"{self.prefix}-autoscale-{color.value}"

    @property
    def legacy_autoscale_setting(self) -> str:
        """The one setting earlier switchyard versions re-targeted; provisioning removes it."""
        return f"{self.prefix}-autoscale"

    @property
    def network_security_group(self) -> str:
        """On the gateway's subnet: who may reach the test listener (and Azure's own probes)."""
        return f"{self.prefix}-agw-nsg"

    @property
    def public_ip(self) -> str:
        return f"{self.prefix}-agw-pip"

    @property
    def virtual_network(self) -> str:
        return f"{self.prefix}-vnet"

    gateway_subnet: str = "gateway"
    instance_subnet: str = "instances"
    production_listener: str = "production"
    test_listener: str = "test"
    production_rule: str = "production"
    test_rule: str = "test"
    production_port_name: str = "production"
    test_port_name: str = "test"
    probe: str = "health"
    backend_settings: str = "service"
    frontend_ip: str = "frontend"  # public: the production listener
    private_frontend_ip: str = "private"  # on the gateway subnet: the test listener
    diagnostic_setting: str = "switchyard-access-log"  # sends the access log to Log Analytics
    gateway_ip_configuration: str = "gateway"
    nic_configuration: str = "nic"
    ip_configuration: str = "ipconfig"

    @staticmethod
    def pool(color: Color) -> str:
        """Every instance of `color` and nothing else (NIC members: the scale set's model)."""
        return color.value

    @staticmethod
    def canary_pool(color: Color) -> str:
        """Every instance of `color`, plus the canary instances of the other color while a canary
        is prepared (docs/decisions/0010-canary-pools.md)."""
        return f"{color.value}-and-canary"

    @classmethod
    def pools(cls) -> list[str]:
        return [name for color in Color for name in (cls.pool(color), cls.canary_pool(color))]

    @staticmethod
    def color_of_pool(pool_name: str) -> Color | None:
        """The color whose instances a pool holds (its own, or its own and a canary)."""
        try:
            return Color(pool_name.lower().removesuffix("-and-canary"))
        except ValueError:
            return None

    @classmethod
    def is_canary_pool(cls, pool_name: str) -> bool:
        color = cls.color_of_pool(pool_name)
        return color is not None and pool_name.lower() == cls.canary_pool(color)

    @property
    def image_definition(self) -> str:
        return self.service

    @property
    def release_lock(self) -> str:
        """The Prefect concurrency limit that allows one release per service and environment."""
        return f"release:{self.service}:{self.environment}"
