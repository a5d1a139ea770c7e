"""Build, scan and publish an immutable image of a service.

The runbook:
  1. find the app at its commit (default HEAD): the commit and the app folder at it must exist.
  2. resolve the version: base x this month's patch level x app version -> gallery version;
     an identical build already published is reused unless a rebuild is forced.
  3. validate: the app folder at the commit and Packer's template, before anything runs.
  4. build with Packer from `git archive` of the commit (uncommitted changes never ship).
  5. scan with Trivy and the offline OSV matcher; make the SBOM; read the image's compliance
     results and patch changes; record the artifact's sha256.
  6. gate on the scan policy: findings (optionally only those production does not already
     have), failed hardening controls, the advisory data's age.
  7. verify the artifact is still the one scanned (re-hash), upload it as a page blob to the
     environment's storage account and publish it from there to the Azure Compute Gallery with
     the image's history in tags, excluded from "latest" until a release has held full traffic;
     wait for replication.
Nothing unscanned, changed since its scan or failing policy ever reaches the gallery.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks import load_recipe, load_scan_policy
from switchyard.core.config import FaultProfile, ServiceContext
from switchyard.core.outcomes import Refused
from switchyard.core.reports import Report, image_report, scan_gate_stop_report
from tasks.history import change_tags_on_flow_runs_only
from tasks.images import (
    PublishedImage,
    app_source,
    build_image,
    gate,
    gate_failure,
    image_source,
    production_baseline,
    publish,
    resolve_version,
    scan_image,
    template_of,
    validate_inputs,
    verify_artifact,
)
from tasks.locks import LockBusy, hold_lock
from tasks.provision import load_service_context

# A second build of the same service waits this long for the first (a build with its scan takes
# minutes), then is refused: both would otherwise resolve the same gallery version.
BUILD_LOCK_WAIT_S = 1800.0


@flow(name="image-pipeline", log_prints=True)
def image_pipeline(
    service: str,
    app_version: str,
    base: str | None = None,
    environment: str = "staging",
    force: bool = False,
    git_commit: str | None = None,
    fault_profile: FaultProfile | None = None,
    scan_policy: str = "default",
    baseline_environment: str | None = "production",
) -> PublishedImage:
    """Build `service` at `app_version` (semver) on `base` (default: the service's), scan it, and
    publish it to `environment`'s gallery. `force` rebuilds even if identical inputs were published
    (the monthly patch run forces). `fault_profile` builds faults in on purpose (demos)."""
    with change_tags_on_flow_runs_only():
        context = load_service_context(service, environment)
        lock = image_build_lock(service)
        try:
            with hold_lock(lock, BUILD_LOCK_WAIT_S):
                return _build_scan_publish(
                    context, app_version, base, force, git_commit, fault_profile, scan_policy, baseline_environment
                )
        except LockBusy:
            raise Refused(
                f"another image build of {service} is running (lock {lock} held for more than "
                f"{BUILD_LOCK_WAIT_S:.0f} s); nothing was built. Wait for it, then build again"
            ) from None


def image_build_lock(service: str) -> str:
    """One build of a service at a time, across workers and machines (a Prefect concurrency limit):
    two builds at once would resolve the same next gallery version and race to publish it."""
    return f"image-build:{service}"


def _build_scan_publish(
    context: ServiceContext,
    app_version: str,
    base: str | None,
    force: bool,
    git_commit: str | None,
    fault_profile: FaultProfile | None,
    scan_policy: str,
    baseline_environment: str | None,
) -> PublishedImage:
    logger = get_run_logger()
    service = context.service.name
    recipe = load_recipe(service)
    scanning = load_scan_policy(scan_policy)
    source = app_source(context, git_commit)
    plan = resolve_version(
        context,
        app_version,
        base or recipe.base or context.service.base,
        source.commit,
        fault_profile or recipe.fault_profile,
        force,
    )
    if plan.reuse is not None:
        _publish(f"image-{service}", image_report(plan.reuse, reused=True))
        return PublishedImage.of(plan.reuse, reused=True, source=image_source(context, plan.gallery_version))

    template = template_of(recipe, context.environment)
    validate_inputs(context, plan, template, source)
    image = build_image(context, plan, template, recipe.packer_timeout_s, source)
    scan = scan_image(image, scanning)
    production = _production_context(service, baseline_environment)
    production_version, baseline = production_baseline(production)
    result = gate(plan, scan, scanning, baseline, on_azure=context.environment.auth != "emulator")
    if not result.passed:
        _publish(f"image-{service}", scan_gate_stop_report(service, plan.gallery_version, result))
        raise gate_failure(plan, result)
    verify_artifact(context, image, scan)
    metadata = publish(context, plan, image, scan, result)
    published = PublishedImage.of(metadata, reused=False, source=image_source(context, plan.gallery_version), scan=scan)
    report = image_report(metadata, reused=False, production=production_version, gate=result, patches=scan.patches)
    _publish(f"image-{service}", report)
    logger.info("published %s %s", service, published.gallery_version)
    return published


def _production_context(service: str, environment: str | None) -> ServiceContext | None:
    if environment is None:
        return None
    try:
        return load_service_context(service, environment)
    except ValueError:
        return None  # the service is not deployed there: no baseline


def _publish(key: str, report: Report) -> None:
    create_markdown_artifact(key=key, markdown=report.markdown, description=report.description)
