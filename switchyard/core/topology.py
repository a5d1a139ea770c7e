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

    @property
    def autoscale_setting(self) -> str:
        return f"{self.prefix}-autoscale"

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
    frontend_ip: str = "frontend"
    gateway_ip_configuration: str = "gateway"
    nic_configuration: str = "nic"
    ip_configuration: str = "ipconfig"

    @staticmethod
    def pool(color: Color) -> str:
        return color.value

    @staticmethod
    def color_of_pool(pool_name: str) -> Color | None:
        try:
            return Color(pool_name.lower())
        except ValueError:
            return None

    @property
    def image_definition(self) -> str:
        return self.service

    @property
    def release_lock(self) -> str:
        """The Prefect concurrency limit that allows one release per service and environment."""
        return f"release:{self.service}:{self.environment}"
