"""Image pipeline tasks: resolve the version, build with Packer, scan, gate, publish.

Retries where a retry can help (a cloud call, a scanner that crashed); never on a gate failure.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.events import emit_event
from prefect.runtime import task_run
from pydantic import BaseModel, ConfigDict

from switchyard.checkout import default_state_dir
from switchyard.cloud.factory import cloud_for
from switchyard.cloud.ports import ImageGallery, ImageSource
from switchyard.core.config import AzureEnvironment, FaultProfile, ImageRecipe, ServiceContext
from switchyard.core.findings import SEVERITIES_WORST_FIRST, Finding, FindingKind, ScanSummary
from switchyard.core.image_metadata import ImageMetadata, ImageMetadataError
from switchyard.core.image_records import ControlOutcome
from switchyard.core.outcomes import GateFailed
from switchyard.core.scan_policy import GateResult, ScanConfiguration, evaluate
from switchyard.core.versions import ImageVersion, PatchLevel, next_patch_level
from switchyard.images.artifact import load_app_config
from switchyard.images.azure_image import AzureImage, AzureImageRequest, build_azure_image
from switchyard.images.local_image import LocalImage, LocalImageRequest, build_local_image
from switchyard.images.packer import AZURE_TEMPLATE, LOCAL_TEMPLATE, PackerRunner
from switchyard.images.packer_output import PackerLine
from switchyard.images.scan import ArtifactChanged, ImageScan, scan_artifact, verify_scanned
from switchyard.images.scanners.osv import OsvScanner
from switchyard.images.scanners.trivy import TrivyConfig, TrivyScanner
from switchyard.images.source import AppSource, export_app, resolve_app_source
from switchyard.images.source import describe as describe_source


def _gallery(context: ServiceContext) -> ImageGallery:
    return cloud_for(context).gallery


# What a build made: a local artifact (uploaded as a page blob to publish) or a managed image on Azure
# with its scan inputs. Both are scanned, gated and verified the same way before anything is published.
BuiltImage = LocalImage | AzureImage


def template_of(recipe: ImageRecipe, environment: AzureEnvironment) -> Path:
    """The recipe's own template, else the environment's builder's: local.pkr.hcl or azure.pkr.hcl."""
    if recipe.template:
        return Path(recipe.template).resolve()
    return AZURE_TEMPLATE if environment.builder == "azure" else LOCAL_TEMPLATE


class ImagePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    version: ImageVersion
    git_commit: str
    fault_profile: FaultProfile
    reuse: ImageMetadata | None = None  # an identical build already published

    @property
    def gallery_version(self) -> str:
        return self.version.gallery_version


@task(name="find the app at its commit", cache_policy=NO_CACHE)
def app_source(context: ServiceContext, git_commit: str | None) -> AppSource:
    """The commit to build (None: HEAD), checked before anything runs: it exists, and the app folder
    with its switchyard-app.json exists at it. The build takes the app from this commit only."""
    source = resolve_app_source(Path(context.service.app_dir), git_commit)
    get_run_logger().info("%s", describe_source(source))
    return source


@task(name="resolve image version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def resolve_version(
    context: ServiceContext,
    app_version: str,
    base: str,
    git_commit: str | None,
    fault_profile: FaultProfile,
    force: bool,
    today: date | None = None,
) -> ImagePlan:
    """This month's patch level; the same inputs again reuse what is published unless forced."""
    logger = get_run_logger()
    today = today or datetime.now(UTC).date()
    commit = git_commit or resolve_app_source(Path(context.service.app_dir), None).commit
    first_of_month = ImageVersion.of(base, f"{today.year}.{today.month:02d}", app_version)  # validates all three
    published: list[tuple[ImageVersion, ImageMetadata | None]] = []
    for image in _gallery(context).image_versions(context.service.name):
        try:
            version = ImageVersion.from_gallery_version(image.gallery_version)
        except ValueError:
            continue  # a version switchyard did not make
        try:
            metadata: ImageMetadata | None = ImageMetadata.from_tags(image.tags)
        except ImageMetadataError:
            metadata = None
        published.append((version, metadata))
    this_month = [
        (version, metadata)
        for version, metadata in published
        if version.base == first_of_month.base
        and version.app_version == first_of_month.app_version
        and version.patch_level.same_month(first_of_month.patch_level)
    ]
    if not force:
        identical = [
            metadata
            for _, metadata in sorted(this_month, key=lambda pair: pair[0], reverse=True)
            if metadata and metadata.git_commit == commit and metadata.fault_profile == fault_profile
        ]
        if identical:
            logger.info("%s was built from the same inputs: reusing it", identical[0].gallery_version)
            return ImagePlan(
                service=context.service.name,
                version=identical[0].version,
                git_commit=commit,
                fault_profile=fault_profile,
                reuse=identical[0],
            )
    patch_level: PatchLevel = next_patch_level(
        today.year,
        today.month,
        base=first_of_month.base,
        app_version=first_of_month.app_version,
        existing=[version for version, _ in published],
    )
    version = ImageVersion(base=first_of_month.base, patch_level=patch_level, app_version=first_of_month.app_version)
    logger.info("building %s (%s)", version.gallery_version, version)
    return ImagePlan(service=context.service.name, version=version, git_commit=commit, fault_profile=fault_profile)


@task(name="validate build inputs", cache_policy=NO_CACHE)
def validate_inputs(context: ServiceContext, plan: ImagePlan, template: Path, source: AppSource) -> None:
    """The app folder at the commit has the shape Packer's template expects, and Packer accepts the template."""
    scratch = _builds(plan) / f"validate-{uuid4().hex[:8]}"
    try:
        app_dir = export_app(source, scratch / "app")
        config = load_app_config(app_dir)
        if config.service_port != context.service.service_port:
            raise ValueError(
                f"{source.app_path or '.'}/switchyard-app.json at {source.commit[:12]} says port "
                f"{config.service_port}, but service {context.service.name} is configured for "
                f"{context.service.service_port}"
            )
        if config.health_path != context.service.health_path:
            # The gateway would probe a path the app does not answer: no instance would ever be healthy.
            raise ValueError(
                f"{source.app_path or '.'}/switchyard-app.json at {source.commit[:12]} says health path "
                f"{config.health_path}, but service {context.service.name} is configured for "
                f"{context.service.health_path}"
            )
        request = build_request(context.environment, plan, app_dir, scratch)
        PackerRunner().validate_template(template, variables=request.packer_variables())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _builds(plan: ImagePlan) -> Path:
    return default_state_dir() / "builds" / plan.service


def build_request(
    environment: AzureEnvironment, plan: ImagePlan, app_dir: Path, output_dir: Path
) -> LocalImageRequest | AzureImageRequest:
    """What Packer is asked to build for `environment`'s builder: every variable of its template."""
    common = {
        "service": plan.service,
        "app_dir": app_dir,
        "version": plan.version,
        "git_commit": plan.git_commit,
        "fault_profile": plan.fault_profile,
        "output_dir": output_dir,
        "built_at": datetime.now(UTC).replace(microsecond=0),
    }
    if environment.builder == "local":
        return LocalImageRequest.model_validate(common)
    if not environment.build_resource_group:
        raise ValueError(
            f"environment {environment.name} builds images on Azure (image_builder azure) but names no "
            "build_resource_group: give it an existing resource group for the build VM and managed image"
        )
    return AzureImageRequest.model_validate(
        {**common, "build_resource_group": environment.build_resource_group, "vm_size": environment.build_vm_size}
    )


@task(name="build image with Packer", cache_policy=NO_CACHE, timeout_seconds=3600)
def build_image(
    context: ServiceContext, plan: ImagePlan, template: Path, timeout_s: float, source: AppSource
) -> BuiltImage:
    """Packer builds the app as it is at the commit (exported with git archive into the build's
    folder) with the environment's builder: a local artifact, or a managed image and its scan inputs."""
    logger = get_run_logger()
    cancel = threading.Event()
    # A folder of its own for every build: two builds of one version (two environments' galleries,
    # two stacks on one machine) would otherwise write the same artifact and checksum file at once.
    output_dir = _builds(plan) / f"{plan.gallery_version}-{uuid4().hex[:8]}"
    app_dir = export_app(source, output_dir / "source")
    logger.info("%s", describe_source(source))
    request = build_request(context.environment, plan, app_dir, output_dir)

    def packer_line(line: PackerLine) -> None:
        logger.info("packer: %s", line.text)

    image: BuiltImage
    try:
        if isinstance(request, AzureImageRequest):
            group = request.build_resource_group
            logger.info("building on Azure: managed image %s in %s", request.managed_image_name, group)
            image = build_azure_image(
                request, template=template, on_line=packer_line, timeout=timeout_s, cancel_event=cancel
            )
        else:
            image = build_local_image(
                request, template=template, on_line=packer_line, timeout=timeout_s, cancel_event=cancel
            )
    except BaseException:
        cancel.set()  # make sure Packer's process group goes with us
        raise
    logger.info("built %s (%d bytes, sha256 %s)", image.scanned_path.name, image.size_bytes, image.sha256)
    return image


@task(name="scan image", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def scan_image(image: BuiltImage, scanning: ScanConfiguration) -> ImageScan:
    """Trivy (secrets, misconfigurations[, vulnerabilities]) and the offline OSV matcher, plus the SBOM."""
    logger = get_run_logger()
    trivy = TrivyScanner(
        TrivyConfig(
            cache_dir=Path(scanning.trivy_cache_dir) if scanning.trivy_cache_dir else None,
            scan_vulnerabilities=scanning.trivy_vulnerabilities,
            timeout_seconds=scanning.scanner_timeout_s,
        )
    )
    scanners: list[TrivyScanner | OsvScanner] = [trivy]
    if scanning.osv_databases:
        scanners.append(OsvScanner([Path(d) for d in scanning.osv_databases]))
    scanned = image.scanned_path
    sbom_path = scanned.with_name(scanned.name.removesuffix(".tar.gz") + ".sbom.cdx.json")
    scan = scan_artifact(scanned, scanners=scanners, sbom_scanner=trivy, sbom_path=sbom_path)
    logger.info(
        "scan of sha256 %s: %d finding(s) from %s; %d compliance control(s)%s; %d package(s) patched%s",
        scan.artifact_sha256,
        len(scan.findings),
        ", ".join(r.scanner for r in scan.results),
        len(scan.compliance.controls),
        f" ({scan.compliance.problem})" if scan.compliance.problem else "",
        len(scan.patches.changes),
        f" ({scan.patches.reason})" if scan.patches.reason else "",
    )
    return scan


def findings_key(service: str, gallery_version: str) -> str:
    return f"scan-findings-{service}-{gallery_version.replace('.', '-')}"


def _record_findings(service: str, gallery_version: str, findings: tuple[Finding, ...]) -> None:
    """Keep the findings in Prefect (a table artifact), so a later gate can compare against them."""
    create_table_artifact(
        key=findings_key(service, gallery_version),
        table=[json.loads(f.model_dump_json()) for f in findings] or [{"id": "", "kind": "none"}],
        description=f"Scan findings of {service} {gallery_version}",
    )


def _recorded_findings(service: str, gallery_version: str) -> list[Finding] | None:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[findings_key(service, gallery_version)])),
            limit=1,
        )
    if not artifacts:
        return None
    data = artifacts[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [Finding.model_validate(row) for row in rows or [] if isinstance(row, dict) and row.get("kind") != "none"]


@task(name="find production's findings", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def production_baseline(production: ServiceContext | None) -> tuple[str | None, list[Finding] | None]:
    """The findings of the image serving production now (for the gate's new-only mode)."""
    logger = get_run_logger()
    if production is None:
        return None, None
    cloud = cloud_for(production)
    gateway = cloud.router.routes(production.topology)
    if not gateway.exists or gateway.live_color is None:
        logger.info("%s has no production yet: every finding is new", production.topology.prefix)
        return None, None
    live = cloud.scale_sets.observe(production.topology, gateway.live_color).runs_only
    if live is None:
        return None, None
    findings = _recorded_findings(production.service.name, live)
    logger.info("production runs %s (%s recorded findings)", live, "no" if findings is None else len(findings))
    return live, findings


@task(name="scan gate", cache_policy=NO_CACHE)
def gate(
    plan: ImagePlan,
    scan: ImageScan,
    scanning: ScanConfiguration,
    baseline: list[Finding] | None,
    on_azure: bool = False,
) -> GateResult:
    """The scan policy decides (the flow stops on a failure) on the findings, the image's compliance
    results and the advisory data's age; the findings are kept for later gates."""
    result = evaluate(
        scanning.policy.for_environment(on_azure=on_azure),
        scan.findings,
        baseline=baseline,
        today=datetime.now(UTC).date(),
        scanned_kinds=scan.scanned_kinds,
        compliance=scan.compliance,
        vulndb=scan.vulnerability_databases,
    )
    _record_findings(plan.service, plan.gallery_version, scan.findings)
    return result


def gate_failure(plan: ImagePlan, result: GateResult) -> GateFailed:
    """The error that names every finding that failed the gate, and why."""
    failing = "; ".join(
        f"{f.finding.id} ({f.finding.kind.value}, {f.finding.severity.value}"
        + (f", {f.finding.package} {f.finding.installed_version}" if f.finding.package else "")
        + f"): {f.reason}"
        for f in result.failing
    )
    missing = ", ".join(kind.value for kind in result.missing_kinds)
    controls = "; ".join(
        f"control {item.control.id} ({item.control.title}): {item.reason}" for item in result.failing_controls
    )
    problems = [
        failing,
        f"not scanned: {missing}" if missing else "",
        controls,
        f"compliance results missing: {result.compliance_problem}" if result.compliance_problem else "",
        *(age.problem for age in result.vulndb),
    ]
    what = "; ".join(problem for problem in problems if problem)
    return GateFailed(f"scan gate failed for {plan.service} {plan.gallery_version}: {what}")


@task(name="verify the scanned artifact", cache_policy=NO_CACHE)
def verify_artifact(context: ServiceContext, image: BuiltImage, scan: ImageScan) -> str:
    """Right before publish: what was scanned is still byte for byte what was built (else
    ArtifactChanged, and nothing is published); on Azure, the managed image is still the one this
    build made (its tags name this version and commit). Returns the scanned sha256."""
    digest = verify_scanned(image.scanned_path, scan, image.sha256)
    if isinstance(image, AzureImage):
        tags = _gallery(context).managed_image_tags(image.managed_image_id)
        wanted = {"switchyard.version": image.manifest.gallery_version, "switchyard.commit": image.manifest.git_commit}
        if tags is None or any(tags.get(key) != value for key, value in wanted.items()):
            raise ArtifactChanged(
                f"the managed image {image.managed_image_id} is gone or is not this build's (tags {tags}); "
                "nothing was published: build again"
            )
    get_run_logger().info("%s is what was scanned (sha256 %s)", image.scanned_path.name, digest)
    return digest


@task(name="publish to the gallery", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def publish(
    context: ServiceContext, plan: ImagePlan, image: BuiltImage, scan: ImageScan, result: GateResult
) -> ImageMetadata:
    """Create the gallery version with its history in tags (excluded from latest) and wait for
    replication. Its source: a local artifact is uploaded to the environment's storage account as a
    page blob first (Azure never publishes from a local path); an Azure build's managed image is the
    source as it is, and is deleted once the version holds its own copy."""
    logger = get_run_logger()
    cloud = cloud_for(context)
    gallery = cloud.gallery
    metadata = ImageMetadata(
        service=plan.service,
        version=plan.version,
        git_commit=plan.git_commit,
        scan_summary=scan.summary,
        scan_gate_passed=result.passed,
        sbom_sha256=scan.sbom.sha256,
        built_at=image.manifest.built_at,
        fault_profile=plan.fault_profile,
    )
    gallery.ensure_image_definition(plan.service, str(plan.version.base))
    existing = gallery.image_version(plan.service, plan.gallery_version)
    if existing.exists and existing.provisioning_state == "Succeeded":
        # A retry after the create went through: the version is there, tags included.
        logger.info("%s is already published", plan.gallery_version)
        return ImageMetadata.from_tags(existing.tags)
    if isinstance(image, AzureImage):
        source = ImageSource(image_id=image.managed_image_id)
    else:
        source = cloud.image_storage.stage(
            image.artifact_path, plan.service, plan.gallery_version, progress=logger.info
        )
    observed = gallery.publish(
        plan.service,
        plan.gallery_version,
        source,
        metadata.to_tags(),
        context.environment.regions,
        progress=logger.info,
    )
    if not observed.replicated:
        raise RuntimeError(f"{plan.gallery_version} is published but not replicated: {observed.replication}")
    if isinstance(image, AzureImage):
        gallery.delete_managed_image(image.managed_image_id)
        logger.info("deleted the intermediate managed image %s", image.managed_image_id)
    emit_event(
        event="switchyard.image.published",
        resource={
            "prefect.resource.id": f"switchyard.image.{plan.service}.{plan.gallery_version}",
            "prefect.resource.name": f"{plan.service} {plan.gallery_version}",
            "switchyard.service": plan.service,
        },
        payload={
            "gallery_version": plan.gallery_version,
            "app_version": str(plan.version.app_version),
            "patch_level": str(plan.version.patch_level),
            "base": str(plan.version.base),
            "git_commit": plan.git_commit,
            "scan": metadata.scan_summary_text(),
            "task_run": str(task_run.get_id() or ""),
        },
    )
    return metadata


class ImageSourceInfo(BaseModel):
    """What a published version was made from: the page blob and its storage account (or a managed image)."""

    uri: str | None = None
    storage_account_id: str | None = None
    image_id: str | None = None


@task(name="read the image's source", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def image_source(context: ServiceContext, gallery_version: str) -> ImageSourceInfo | None:
    """The published version's source, as the gallery shows it (None when it does not exist)."""
    observed = _gallery(context).image_version(context.service.name, gallery_version)
    if not observed.exists:
        return None
    return ImageSourceInfo(
        uri=observed.source_uri, storage_account_id=observed.source_storage_account_id, image_id=observed.source_id
    )


class PublishedImage(BaseModel):
    """What the pipeline published (or reused): the CLI's --json line. A reused version's tags hold
    no digest, compliance or patch record, so those are None for it."""

    service: str
    gallery_version: str
    base: str
    patch_level: str
    app_version: str
    git_commit: str
    scan: dict[str, dict[str, int]]
    reused: bool
    source: ImageSourceInfo | None = None  # the blob (and storage account) the version was made from
    artifact_sha256: str | None = None  # the digest scanned, and verified again before publishing
    compliance: dict[str, int] | None = None  # hardening controls per outcome: pass, fail, fixed
    patches: dict[str, Any] | None = None  # patch level, snapshot, changes [{package, from, to}], reason

    @classmethod
    def of(
        cls,
        metadata: ImageMetadata,
        reused: bool,
        source: ImageSourceInfo | None = None,
        scan: ImageScan | None = None,
    ) -> PublishedImage:
        return cls(
            service=metadata.service,
            gallery_version=metadata.gallery_version,
            base=str(metadata.base),
            patch_level=str(metadata.patch_level),
            app_version=str(metadata.app_version),
            git_commit=metadata.git_commit,
            scan=summary_by_kind(metadata.scan_summary),
            reused=reused,
            source=source,
            artifact_sha256=scan.artifact_sha256 if scan else None,
            compliance={o.value: scan.compliance.count(o) for o in ControlOutcome} if scan else None,
            # by_alias: the record's "from"/"to" (Python's keyword rules name the fields before/after)
            patches=scan.patches.model_dump(mode="json", by_alias=True) if scan else None,
        )


def summary_by_kind(summary: ScanSummary) -> dict[str, dict[str, int]]:
    """Every kind and severity, zeros included, so readers need no defaults."""
    return {
        kind.value: {severity.value: summary.count(kind, severity) for severity in SEVERITIES_WORST_FIRST}
        for kind in FindingKind
    }
