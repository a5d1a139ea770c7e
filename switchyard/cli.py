"""`switchyard ...`: the command line.

Commands that run a flow run it in this process against the Prefect API in use: the local stack's
(`switchyard up`), PREFECT_API_URL's, or Prefect's own ephemeral one. Blocks missing from that
API are first registered from deployments/fleet.yaml (existing ones are never overwritten). Flows
are found by their prefect.yaml entrypoints (switchyard/runbooks.py); the local stack, the demo, the
relay and the emulator are sub-apps loaded only when one of their commands runs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from switchyard.stack.cli import use_local_stack

# command -> (module whose `app` holds it, the command's name there; None: the whole app as a group)
_SUB_APPS: dict[str, tuple[str, str | None]] = {
    "up": ("switchyard.stack.cli", "up"),
    "down": ("switchyard.stack.cli", "down"),
    "ui-url": ("switchyard.stack.cli", "ui-url"),
    "demo": ("switchyard.demo.cli", "demo"),
    "relay": ("switchyard.relay.cli", "relay"),
    "emulator": ("switchyard.stack.emulator_cli", None),
}


class _LazyCommands(TyperGroup):
    """The commands of the sub-apps are imported when they are used (or listed by --help)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *_SUB_APPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in _SUB_APPS:
            return super().get_command(ctx, cmd_name)
        module, name = _SUB_APPS[cmd_name]
        command = typer.main.get_command(importlib.import_module(module).app)
        if name is not None and isinstance(command, TyperGroup):
            return command.get_command(ctx, name)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=_LazyCommands, no_args_is_help=True, help="Immutable VM image delivery to Azure scale sets, on Prefect."
)
image_app = typer.Typer(no_args_is_help=True, help="Images: build, scan, publish.")
app.add_typer(image_app, name="image")
fleet_app = typer.Typer(no_args_is_help=True, help="The fleet: services and environments as Prefect blocks.")
app.add_typer(fleet_app, name="fleet")


def _apply_fleet(quiet: bool = True) -> list[str]:
    from blocks.seed import seed_blocks
    from switchyard.checkout import checkout_fleet

    created = asyncio.run(seed_blocks(checkout_fleet()))
    if created and not quiet:
        for name in created:
            typer.echo(f"registered block {name}")
    return created


def _flow(deployment: str) -> Any:
    from switchyard.runbooks import load_flow

    return load_flow(deployment)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.flush()
    typer.echo(json.dumps(payload, default=str))


@fleet_app.command("apply")
def fleet_apply() -> None:
    """Register deployments/fleet.yaml's services, environments and policies as blocks (missing ones only)."""
    use_local_stack()
    created = _apply_fleet(quiet=False)
    typer.echo(f"{len(created)} block(s) registered; existing blocks were left as they are")


@image_app.command("build")
def image_build(
    service: Annotated[str, typer.Argument(help="A service of the fleet, e.g. sample.")],
    app_version: Annotated[str, typer.Option("--app-version", help="The app's version, MAJOR.MINOR.PATCH.")],
    base: Annotated[str | None, typer.Option(help="Base image (default: the service's).")] = None,
    environment: Annotated[str, typer.Option("--env", help="Environment whose gallery receives the image.")] = (
        "staging"
    ),
    force: Annotated[bool, typer.Option(help="Rebuild even if identical inputs were published.")] = False,
    git_commit: Annotated[str | None, typer.Option(help="Commit to record (default: the app's checkout).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Build, scan and publish an image of SERVICE (runs the image-pipeline flow)."""
    use_local_stack()
    _apply_fleet()
    image_pipeline = _flow("image-pipeline")
    try:
        published = image_pipeline(
            service=service,
            app_version=app_version,
            base=base,
            environment=environment,
            force=force,
            git_commit=git_commit,
        )
    except Exception as error:  # the flow's own error names what failed (findings, versions, ...)
        if as_json:
            _emit_json({"error": str(error), "type": type(error).__name__})
        _fail(f"image build failed: {error}")
        return
    typer.echo(
        f"{'reused' if published.reused else 'published'} {published.service} {published.gallery_version} "
        f"({published.base}, patch {published.patch_level}, app {published.app_version})"
    )
    if as_json:
        _emit_json(published.model_dump())


@app.command()
def provision(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
) -> None:
    """Create or update SERVICE's topology in an environment (runs the provision flow)."""
    use_local_stack()
    _apply_fleet()
    provision_flow = _flow("provision")
    try:
        live = provision_flow(service=service, environment=environment)
    except Exception as error:
        _fail(f"provision failed: {error}")
        return
    typer.echo(f"{service} in {environment} is provisioned; production routes to {live}")


@app.command()
def release(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    image: Annotated[str, typer.Option("--image", help="Gallery version to release.")],
    strategy: Annotated[str | None, typer.Option(help="canary or blue-green (default: the policy's).")] = None,
    policy: Annotated[str, typer.Option(help="Release policy block.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Release an image of SERVICE to an environment (runs the release flow)."""
    use_local_stack()
    _apply_fleet()
    from switchyard.core.rollout import Strategy

    release_flow = _flow("release")
    chosen = Strategy(strategy) if strategy else None
    try:
        summary = release_flow(
            service=service, environment=environment, image_version=image, strategy=chosen, policy=policy
        )
    except Exception as error:
        if as_json:
            _emit_json({"outcome": "failed", "error": str(error)})
        _fail(f"release failed: {error}")
        return
    typer.echo(f"{service} {image} in {environment}: {summary.outcome}")
    if as_json:
        _emit_json(summary.model_dump(mode="json", exclude={"analyses"}))


@app.command()
def rollback(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the run and the event).")] = "requested by a person",
) -> None:
    """Put all of SERVICE's traffic back on the stable color (runs the rollback flow)."""
    use_local_stack()
    _apply_fleet()
    rollback_flow = _flow("rollback")
    try:
        report = rollback_flow(service=service, environment=environment, reason=reason)
    except Exception as error:
        _fail(f"rollback failed: {error}")
        return
    typer.echo(report.action)


@app.command()
def status(
    service: Annotated[str, typer.Argument(help="A service of the fleet.")],
    environment: Annotated[str, typer.Option("--env", help="Environment, e.g. production.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Live color, the image on each color, the current split and health, read from the cloud."""
    use_local_stack()
    _apply_fleet()
    from blocks import load_environment, load_service
    from switchyard.cloud.factory import cloud_for
    from switchyard.core.config import ServiceContext
    from switchyard.core.status import service_status

    try:
        config = load_service(service)
        config.ports_in(environment)
        context = ServiceContext(environment=load_environment(environment), service=config)
        report = service_status(cloud_for(context).observe(context.topology))
    except Exception as error:
        _fail(f"status failed: {error}")
        return
    typer.echo(report.text())
    if as_json:
        _emit_json(report.model_dump(mode="json"))


if __name__ == "__main__":
    app()
