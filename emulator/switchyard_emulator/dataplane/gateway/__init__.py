"""The emulator's Application Gateway data plane: a real reverse proxy in its own process.

`GatewayFleet` (used by the data plane in the emulator process) drives one worker subprocess
(`worker.py`) that serves every gateway's listeners, rules, pools, probes and connection
draining, and writes the access log and backend health samples to the telemetry DB.
"""

from switchyard_emulator.dataplane.gateway.fleet import (
    GatewayConfigError,
    GatewayError,
    GatewayFleet,
    GatewayNotFoundError,
    GatewayPortInUseError,
    GatewayWorkerError,
)

__all__ = [
    "GatewayConfigError",
    "GatewayError",
    "GatewayFleet",
    "GatewayNotFoundError",
    "GatewayPortInUseError",
    "GatewayWorkerError",
]
