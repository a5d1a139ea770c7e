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
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from switchyard.console import quiet_console_tracebacks
from switchyard.core.bad_input import BadInput
from switchyard.core.rollout import Strategy
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
vulndb_app = typer.Typer(no_args_is_help=True, help="The OSV advisory snapshot the offline scanner reads.")
app.add_typer(vulndb_app, name="vulndb")
flag_app = typer.Typer(
    no_args_is_help=True, help="Feature flags: on/off switches a service reads at run time from its database."
)
app.add_typer(flag_app, name="flag")


class Outcome(IntEnum):
    """Exit codes, one per class of outcome (README, "Command line")."""

    OK = 0
    FAILED = 1  # something broke: an error, not a decision (the run's logs have the details)
    BAD_INPUT = 2  # the command line or a name is wrong; nothing was touched (typer's usage errors too)
    REFUSED = 3  # refused before any change: preflight, a scan gate, a merge that would go back
    ROLLED_BACK = 4  # the change reached users and was taken back


DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks and Prefect's full logs.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
ServiceArgument = Annotated[str, typer.Argument(help="A service of the fleet, e.g. sample.")]
EnvironmentOption = Annotated[str, typer.Option("--env", help="Environment, e.g. staging or production.")]


def _say(outcome: Outcome, line: str, as_json: bool, payload: dict[str, Any] | None = None) -> None:
    """The one outcome line (stderr unless OK), the JSON object when asked, and the exit code."""
    if outcome is Outcome.OK:
        typer.echo(line)
    else:
        typer.secho(line, fg=typer.colors.RED if outcome is not Outcome.ROLLED_BACK else typer.colors.YELLOW, err=True)
    if as_json:
        sys.stdout.flush()
        typer.echo(json.dumps({"outcome": outcome.name.lower().replace("_", "-"), **(payload or {})}, default=str))
    if outcome is not Outcome.OK:
        raise typer.Exit(int(outcome))


def _is_switchyards(error: BaseException) -> bool:
    """switchyard's own exception types carry deliberate messages; anything else is a bug."""
    module = type(error).__module__
    return module.split(".")[0] in ("switchyard", "flows", "tasks", "blocks", "pydantic")


@contextmanager
def _outcomes(what: str, as_json: bool, debug: bool) -> Iterator[None]:
    """Turn what a flow raises into one outcome line and its exit code; tracebacks only with --debug
    or for real bugs. Prefect's run logs keep every detail either way."""
    from switchyard.core.outcomes import Refused, ReleaseFailed

    try:
        yield
    except typer.Exit:
        raise
    except Exception as error:
        if debug:
            traceback.print_exc()
        message = str(error).strip() or type(error).__name__
        if isinstance(error, ReleaseFailed) and error.rolled_back:
            outcome, line = Outcome.ROLLED_BACK, f"{what}: rolled back. {message}"
        elif isinstance(error, ReleaseFailed):
            outcome, line = Outcome.FAILED, f"{what}: failed. {message}"
        elif isinstance(error, Refused):
            outcome, line = Outcome.REFUSED, f"{what}: refused, nothing was changed. {message}"
        elif isinstance(error, BadInput):
            outcome, line = Outcome.BAD_INPUT, f"{what}: {message}"
        elif _is_switchyards(error):
            outcome, line = Outcome.FAILED, f"{what}: failed. {message}"
        else:
            if not debug:
                traceback.print_exc()
            outcome, line = (
                Outcome.FAILED,
                f"{what}: failed with an unexpected {type(error).__name__} (a bug): {message}",
            )
        if not debug and outcome is Outcome.FAILED:
            line += " (details: the run's logs in the Prefect UI, or run again with --debug)"
        payload: dict[str, Any] = {"error": message, "type": type(error).__name__}
        summary = getattr(error, "summary", None)
        if summary is not None:
            payload["summary"] = summary.model_dump(mode="json", exclude={"analyses"})
        _say(outcome, line, as_json, payload)


def _check_names(**names: str | None) -> None:
    """Names must be names (before anything connects anywhere)."""
    from switchyard.core.topology import check_name

    for kind, value in names.items():
        if value is not None:
            try:
                check_name(kind, value)
            except ValueError as error:
                raise BadInput(str(error)) from None


def _connect(
    service: str | None = None,
    environment: str | None = None,
    *,
    more_services: list[str] | None = None,
    more_environments: list[str] | None = None,
) -> None:
    """Point at the Prefect API (the local stack's when it runs), refuse unknown names, then register
    the fleet file's missing blocks. Unknown names are refused before any block is written, and
    without starting Prefect's temporary server when no API is configured (its blocks would be the
    fleet file's anyway)."""
    use_local_stack()
    from switchyard.checkout import checkout_fleet

    fleet = checkout_fleet()
    known_services, known_environments = set(fleet.services), set(fleet.environments)
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        from blocks import AzureEnvironmentBlock, ServiceBlock, known_names

        known_services |= set(known_names(ServiceBlock))
        known_environments |= set(known_names(AzureEnvironmentBlock))
    for name in [*([service] if service else []), *(more_services or [])]:
        if name not in known_services:
            raise BadInput(f"unknown service {name!r}; the fleet has: {', '.join(sorted(known_services)) or 'none'}")
    for name in [*([environment] if environment else []), *(more_environments or [])]:
        if name not in known_environments:
            raise BadInput(
                f"unknown environment {name!r}; the fleet has: {', '.join(sorted(known_environments)) or 'none'}"
            )
    if not PREFECT_API_URL.value() and environment in fleet.environments:
        chosen = fleet.environments[environment]
        if chosen.auth == "emulator" and chosen.emulator_file and not Path(chosen.emulator_file).exists():
            from switchyard.core.outcomes import Refused

            raise Refused(
                f"{environment} is on the local Azure emulator, which is not running ({chosen.emulator_file} "
                "does not exist): start the local stack with `switchyard up`"
            )
    _apply_fleet(fleet)
    if not PREFECT_API_URL.value():
        typer.echo("(no Prefect API configured and no local stack running: using a temporary Prefect server)", err=True)


def _apply_fleet(fleet: Any, quiet: bool = True) -> list[str]:
    from blocks.seed import seed_blocks

    created = asyncio.run(seed_blocks(fleet))
    if created and not quiet:
        for name in created:
            typer.echo(f"registered block {name}")
    return created


def _flow(deployment: str, debug: bool) -> Any:
    """The flow of a deployment in prefect.yaml; without --debug, Prefect's console shows no tracebacks."""
    from switchyard.runbooks import load_flow

    flow = load_flow(deployment)
    if not debug:
        quiet_console_tracebacks()
    return flow


@fleet_app.command("apply")
def fleet_apply() -> None:
    """Register deployments/fleet.yaml's services, environments and policies as blocks (missing ones only)."""
    use_local_stack()
    from switchyard.checkout import checkout_fleet

    created = _apply_fleet(checkout_fleet(), quiet=False)
    typer.echo(f"{len(created)} block(s) registered; existing blocks were left as they are")


@fleet_app.command("status")
def fleet_status(as_json: JsonOption = False, debug: DebugOption = False) -> None:
    """Every service in every environment of the fleet: live color, image, health, a release in flight.
    Read from the cloud; a pair that is not deployed, provisioned or reachable gets a row saying so."""
    with _outcomes("fleet status", as_json, debug):
        _connect()
        from datetime import UTC, datetime

        from blocks import fleet_members
        from switchyard.cloud.factory import cloud_for
        from switchyard.cloud.readonly import read_fleet_status

        report = read_fleet_status(fleet_members(), cloud_for, datetime.now(UTC))
    _say(Outcome.OK, report.text(), as_json, report.model_dump(mode="json"))


@fleet_app.command("patch")
def fleet_patch(
    services: Annotated[
        list[str] | None, typer.Option("--service", help="A service to patch (repeat; default: the whole fleet).")
    ] = None,
    environments: Annotated[
        list[str] | None,
        typer.Option("--env", help="Environments in order, the last one production (default: staging, production)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Services released to production at once (default: the flow's, 5)."),
    ] = None,
    max_failed_share: Annotated[
        float | None,
        typer.Option(
            "--max-failed-share",
            help="Start no further service once more than this share of those tried failed (default: 0.2).",
        ),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run the monthly patch now (the monthly-patch flow, here): rebuild what production runs on this
    month's patch level and release it to staging for every service at once, then to production in
    batches, stopping once too large a share failed. Prints every service's outcome; exits 1 when any
    service was not patched (failed, or held back from production)."""
    from switchyard.core.outcomes import MonthlyPatchFailed
    from switchyard.core.reports import monthly_patch_lines
    from switchyard.core.routine import PatchRollout

    unpatched: MonthlyPatchFailed | None = None
    with _outcomes("fleet patch", as_json, debug):
        for service in services or []:
            _check_names(service=service)
        for environment in environments or []:
            _check_names(environment=environment)
        given = {"production_batch_size": batch_size, "max_failed_share": max_failed_share}
        try:
            rollout = PatchRollout.model_validate({k: v for k, v in given.items() if v is not None})
        except ValidationError as error:
            option = {"production_batch_size": "--batch-size", "max_failed_share": "--max-failed-share"}
            problems = [f"{option[str(e['loc'][0])]}: {e['msg']}" for e in error.errors()]
            raise BadInput("; ".join(problems)) from None
        _connect(more_services=services, more_environments=environments)
        patch = _flow("monthly-patch", debug)
        chain = {"environments": environments} if environments else {}
        try:
            results = patch(services=services, **chain, **rollout.model_dump())
        except MonthlyPatchFailed as failure:
            # A partly failed patch still moved the rest of the fleet: report every service, then fail.
            unpatched, results = failure, failure.results
    for line in monthly_patch_lines(results):
        typer.echo(line)
    payload: dict[str, Any] = {"results": [r.model_dump(mode="json") for r in results]}
    if unpatched is not None:
        payload |= {"error": str(unpatched), "type": type(unpatched).__name__}
        _say(Outcome.FAILED, f"fleet patch: failed. {unpatched}", as_json, payload)
    tally = ", ".join(f"{r.service} {r.result}" for r in results) or "no service"
    _say(Outcome.OK, f"fleet patch: {tally}", as_json, payload)


@image_app.command("build")
def image_build(
    service: ServiceArgument,
    app_version: Annotated[str, typer.Option("--app-version", help="The app's version, MAJOR.MINOR.PATCH.")],
    base: Annotated[str | None, typer.Option(help="Base image (default: the service's).")] = None,
    environment: Annotated[str, typer.Option("--env", help="Environment whose gallery receives the image.")] = (
        "staging"
    ),
    force: Annotated[bool, typer.Option(help="Rebuild even if identical inputs were published.")] = False,
    git_commit: Annotated[
        str | None,
        typer.Option(
            "--git-commit", "--commit", help="Commit to build (git archive; default HEAD, never the working tree)."
        ),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Build, scan and publish an image of SERVICE (runs the image-pipeline flow)."""
    what = f"image build of {service} {app_version}"
    with _outcomes(what, as_json, debug):
        _check_names(service=service, environment=environment)
        from switchyard.core.versions import AppVersion, Base, VersionError

        try:
            AppVersion.parse(app_version)
            if base is not None:
                Base.parse(base)
        except VersionError as error:
            raise BadInput(str(error)) from None
        _connect(service, environment)
        published = _flow("image-pipeline", debug)(
            service=service,
            app_version=app_version,
            base=base,
            environment=environment,
            force=force,
            git_commit=git_commit,
        )
    _say(
        Outcome.OK,
        f"{'reused' if published.reused else 'published'} {published.service} {published.gallery_version} "
        f"({published.base}, patch {published.patch_level}, app {published.app_version})",
        as_json,
        published.model_dump(mode="json"),
    )


@vulndb_app.command("update")
def vulndb_update(
    source: Annotated[
        str | None,
        typer.Option("--from", help="OSV records: an http(s) URL, a zip or a folder (default: OSV's PyPI zip)."),
    ] = None,
    all_packages: Annotated[
        bool, typer.Option("--all-packages", help="Keep every PyPI package, not only those the snapshot covers.")
    ] = False,
    snapshot_dir: Annotated[
        Path | None, typer.Option("--snapshot-dir", help="The snapshot to refresh (default: the one switchyard ships).")
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Refresh the OSV snapshot (vulns/ and snapshot.json) from OSV or a local copy."""
    from switchyard.images.vulndb import PYPA_OSV_SNAPSHOT
    from switchyard.images.vulndb.update import update_snapshot

    # A source that cannot be read is a failure (exit 1) that names it; the snapshot stays as it was.
    with _outcomes("vulndb update", as_json, debug):
        done = update_snapshot(source, snapshot_dir=snapshot_dir or PYPA_OSV_SNAPSHOT, all_packages=all_packages)
    _say(
        Outcome.OK,
        f"vulndb updated: {done.total} PyPI advisories for {len(done.advisories)} package(s), data of "
        f"{done.snapshot_date.isoformat()} from {done.source}",
        as_json,
        done.model_dump(mode="json"),
    )


FlagNameArgument = Annotated[str, typer.Argument(help="The flag, e.g. new_greeting.", metavar="NAME")]


def _flag_context(service: str, environment: str) -> Any:
    """The service in the environment, from its blocks, with a flag store there; nothing is written.
    What the set-flag flow would refuse is refused here first, with the same words."""
    from blocks import load_service_context
    from switchyard.core.flags import database_problem
    from switchyard.core.outcomes import FlagRefused

    context = load_service_context(service, environment)  # BadInput: unknown, or not deployed there
    problem = database_problem(context.service, environment)
    if problem is not None:
        raise FlagRefused(problem)
    return context


@flag_app.command("set")
def flag_set(
    service: ServiceArgument,
    name: FlagNameArgument,
    value: Annotated[str, typer.Argument(help="on or off.", metavar="on|off")],
    environment: EnvironmentOption,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Turn flag NAME of SERVICE on or off in an environment, no deploy (runs the set-flag flow)."""
    with _outcomes(f"flag set of {name} for {service} in {environment}", as_json, debug):
        _check_names(service=service, environment=environment)
        from switchyard.core.flags import check_flag_name, parse_flag_value

        try:
            check_flag_name(name)
            enabled = parse_flag_value(value)
        except ValueError as error:
            raise BadInput(str(error)) from None
        _connect(service, environment)
        _flag_context(service, environment)
        change = _flow("set-flag", debug)(service=service, environment=environment, name=name, enabled=enabled)
    _say(Outcome.OK, change.describe(), as_json, {"flag": change.model_dump(mode="json")})


@flag_app.command("list")
def flag_list(
    service: ServiceArgument, environment: EnvironmentOption, as_json: JsonOption = False, debug: DebugOption = False
) -> None:
    """Every flag of SERVICE in an environment, as its instances read them now (read only)."""
    with _outcomes(f"flag list of {service} in {environment}", as_json, debug):
        _check_names(service=service, environment=environment)
        _connect(service, environment)
        context = _flag_context(service, environment)
        from switchyard.checkout import default_state_dir
        from switchyard.core.flags import on_off
        from switchyard.flags import flag_store

        store = flag_store(context.service, environment, str(default_state_dir()))
        flags = list(store.read().values())
    rows = [f"{f.name:<32} {on_off(f.enabled):<4} {f.updated_at:%Y-%m-%d %H:%M:%S} {f.updated_by}" for f in flags]
    text = "\n".join([f"flags of {service} in {environment} ({store.location}): {len(flags)}, any other is off", *rows])
    _say(Outcome.OK, text, as_json, {"database": store.location, "flags": [f.model_dump(mode="json") for f in flags]})


@app.command()
def provision(service: ServiceArgument, environment: EnvironmentOption, debug: DebugOption = False) -> None:
    """Create or update SERVICE's topology in an environment (runs the provision flow)."""
    with _outcomes(f"provision of {service} in {environment}", False, debug):
        _check_names(service=service, environment=environment)
        _connect(service, environment)
        live = _flow("provision", debug)(service=service, environment=environment)
    _say(Outcome.OK, f"{service} in {environment} is provisioned; production routes to {live}", False)


@app.command()
def release(
    service: ServiceArgument,
    environment: EnvironmentOption,
    image: Annotated[str, typer.Option("--image", help="Gallery version to release, e.g. 1002000.20261100.1.")],
    strategy: Annotated[
        Strategy | None, typer.Option(help="canary or blue-green (default: the release policy's).")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Release policy block (default: the environment's release_policy).")
    ] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Print the steps the release would take from here; change nothing.")
    ] = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Release an image of SERVICE to an environment (runs the release flow)."""
    what = f"release of {service} {image} to {environment}"
    with _outcomes(f"plan of the {what}" if plan else what, as_json, debug):
        _check_names(service=service, environment=environment, policy=policy)
        from switchyard.core.versions import ImageVersion, VersionError

        try:
            ImageVersion.from_gallery_version(image)
        except VersionError as error:
            raise BadInput(f"--image {image!r} is not a switchyard gallery version: {error}") from None
        _connect(service, environment)
        if plan:
            _print_plan(service, environment, image, strategy, policy, as_json)
            return
        summary = _flow("release", debug)(
            service=service, environment=environment, image_version=image, strategy=strategy, policy=policy
        )
    live = f"; production is on {summary.live_after}" if summary.live_after else ""
    # A promotion with a warning (a failed post_promote hook) is still a promotion: exit 0, but say it.
    warned = "".join(f"\nwarning: {warning}" for warning in summary.warnings)
    _say(
        Outcome.OK,
        f"{what}: {summary.outcome}{live}{warned}",
        as_json,
        {"summary": summary.model_dump(mode="json", exclude={"analyses"})},
    )


def _print_plan(
    service: str, environment: str, image: str, strategy: Strategy | None, policy: str | None, as_json: bool
) -> None:
    """`release --plan`: read the cloud (read methods only: switchyard/cloud/readonly.py), plan, print.
    Exit 0 when the release would run, 3 when its preflight would refuse it (as the release would)."""
    from blocks import load_service_context, release_policy_for
    from switchyard.cloud.factory import cloud_for
    from switchyard.cloud.readonly import read_release_plan

    context = load_service_context(service, environment)
    release_policy = release_policy_for(context.environment, policy, strategy)
    found = read_release_plan(cloud_for(context), context, release_policy, image)
    payload = {"plan": found.model_dump(mode="json")}
    if found.refused:
        typer.echo(found.text())
        _say(
            Outcome.REFUSED,
            f"plan of the release of {service} {image} to {environment}: the release would be refused before "
            "any change (see the failed checks above); nothing was changed",
            as_json,
            payload,
        )
    _say(Outcome.OK, found.text(), as_json, payload)


@app.command()
def rollback(
    service: ServiceArgument,
    environment: EnvironmentOption,
    reason: Annotated[str, typer.Option(help="Why (recorded in the run and the event).")] = "requested by a person",
    debug: DebugOption = False,
) -> None:
    """Put all of SERVICE's traffic back on the stable color (runs the rollback flow)."""
    with _outcomes(f"rollback of {service} in {environment}", False, debug):
        _check_names(service=service, environment=environment)
        _connect(service, environment)
        report = _flow("rollback", debug)(service=service, environment=environment, reason=reason)
    _say(Outcome.OK, f"rollback of {service} in {environment}: {report.action}", False)


@app.command()
def status(
    service: ServiceArgument, environment: EnvironmentOption, as_json: JsonOption = False, debug: DebugOption = False
) -> None:
    """Live color, the image on each color, the current split and health, read from the cloud."""
    with _outcomes(f"status of {service} in {environment}", as_json, debug):
        _check_names(service=service, environment=environment)
        _connect(service, environment)
        from blocks import load_service_context
        from switchyard.cloud.factory import cloud_for
        from switchyard.core.status import service_status

        context = load_service_context(service, environment)
        report = service_status(cloud_for(context).observe(context.topology))
    _say(Outcome.OK, report.text(), as_json, report.model_dump(mode="json"))


if __name__ == "__main__":
    app()
