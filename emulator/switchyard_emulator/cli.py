"""`switchyard emulator ...` (also `python -m switchyard_emulator ...`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from switchyard_emulator.resources.quotas import DEFAULT_VCPU_QUOTA

app = typer.Typer(no_args_is_help=True, help="The local Azure emulator (ARM API over HTTPS + data plane).")


@app.callback()
def _group() -> None:
    """The local Azure emulator."""


@app.command()
def start(
    state_dir: Annotated[Path, typer.Option(help="Where the emulator keeps its state (created if missing).")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless --allow-remote).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 0,
    allow_remote: Annotated[bool, typer.Option(help="Allow a non-loopback --host.")] = False,
    fault_rate: Annotated[float, typer.Option(help="Share (0-1) of ARM calls that get a fault.")] = 0.0,
    fault_kinds: Annotated[str, typer.Option(help="Comma-separated: 429,500,slow.")] = "429,500,slow",
    fault_seed: Annotated[int | None, typer.Option(help="Seed of the fault draw (reproducible faults).")] = None,
    fault_slow_seconds: Annotated[float, typer.Option(help="Delay of a 'slow' fault.")] = 2.0,
    page_size: Annotated[int, typer.Option(help="Items per page of list answers (nextLink beyond).")] = 100,
    lro_retry_after: Annotated[
        int,
        typer.Option(
            help="Retry-After (s) on long-running operations (as Azure sends it; SDK clients with default "
            "settings poll this often). 0 sends none, so the client's own polling interval applies: the "
            "emulator finishes most operations in well under a second, and switchyard polls every 50 ms."
        ),
    ] = 1,
    vcpu_quota: Annotated[
        int,
        typer.Option(
            help="Total regional vCPU quota per location (usage.list; scale set writes beyond it get 409). "
            "Change it at run time with PUT /switchyard/quotas."
        ),
    ] = DEFAULT_VCPU_QUOTA,
    profile: Annotated[
        str,
        typer.Option(
            help="Timing profile. 'fast': second-scale metrics (PT1S grains), no ingestion delay, writes "
            "finish as soon as the work is done (demo, most tests). 'azure': what a release meets on "
            "Azure: PT1M and coarser metric grains only, a minute's datapoint available --metrics-latency "
            "after it ends, access-log records queryable --log-ingestion-delay after the request, gateway "
            "and scale-set writes taking --gateway-write-seconds / --scale-set-write-seconds and answering "
            "without Retry-After. Structural rules hold in both."
        ),
    ] = "fast",
    metrics_latency: Annotated[
        float | None,
        typer.Option(
            help="Seconds after a metric grain ends before its datapoint appears (default: azure 60, fast 0)."
        ),
    ] = None,
    log_ingestion_delay: Annotated[
        float | None,
        typer.Option(
            help="Seconds after a request before its access-log record is queryable (default: azure 180, fast 0)."
        ),
    ] = None,
    gateway_write_seconds: Annotated[
        float | None,
        typer.Option(
            help="Minimum duration of an application gateway create/update operation (default: azure 20, fast 0)."
        ),
    ] = None,
    scale_set_write_seconds: Annotated[
        float | None,
        typer.Option(
            help="Minimum duration of a scale-set create/update/manualUpgrade/reimage/restart operation "
            "(default: azure 20, fast 0)."
        ),
    ] = None,
    arm_throttling: Annotated[
        bool | None,
        typer.Option(
            "--arm-throttling/--no-arm-throttling",
            help="Enforce Azure Resource Manager's request limits: per operation type a token bucket (reads "
            "250, refilled 25/s; writes and deletes 200, refilled 10/s), and behind them Microsoft.Compute's "
            "per scale set (a GET: 36, refilled 12 a minute), and Log Analytics' per user (200 queries in 30 s, "
            "5 at once); 429 beyond them "
            "(default: azure on, fast off). Change it at run time with PUT /switchyard/throttling.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    storage_file: Annotated[
        Path | None,
        typer.Option(
            envvar="SWITCHYARD_EMULATOR_STORAGE_FILE",
            help="storage.json of the Azurite that holds the storage accounts' blobs (written by "
            "switchyard_emulator.azurite.start_azurite; mode 0600, it holds the account key). Without it the "
            "emulator creates no storage accounts, so no image can be published.",
        ),
    ] = None,
) -> None:
    """Run the emulator in the foreground until SIGTERM/SIGINT; writes STATE_DIR/emulator.json when ready."""
    from pydantic import ValidationError

    from switchyard_emulator.azurite import AzuriteError
    from switchyard_emulator.faults import FaultConfig, parse_kinds
    from switchyard_emulator.profiles import TimingOverrides
    from switchyard_emulator.server import EmulatorSettings, RemoteHostRefused, run

    try:
        settings = EmulatorSettings(
            state_dir=state_dir,
            host=host,
            port=port,
            allow_remote=allow_remote,
            faults=FaultConfig(
                rate=fault_rate,
                kinds=parse_kinds(fault_kinds),
                seed=fault_seed,
                slow_seconds=fault_slow_seconds,
            ),
            page_size=page_size,
            lro_retry_after=lro_retry_after,
            vcpu_quota=vcpu_quota,
            profile=profile,  # type: ignore[arg-type]  # pydantic checks it is fast or azure
            timing=TimingOverrides(
                metrics_latency_s=metrics_latency,
                log_ingestion_delay_s=log_ingestion_delay,
                gateway_write_s=gateway_write_seconds,
                scale_set_write_s=scale_set_write_seconds,
                arm_throttling=arm_throttling,
            ),
            log_level=log_level,
            storage_file=storage_file,
        )
        code = run(settings)
    except (ValueError, ValidationError, RemoteHostRefused, AzuriteError) as exc:
        typer.echo(f"switchyard emulator: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"switchyard emulator: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
