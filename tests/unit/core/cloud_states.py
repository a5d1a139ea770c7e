"""What the cloud can look like, built as plain observations for the pure rules in switchyard.core.

Addresses are 127.1.0.x for blue and 127.2.0.x for green, instance names <scale set>_<id>."""

from __future__ import annotations

from datetime import UTC, datetime

from switchyard.core.capacity import ComputeQuota, QuotaUsage
from switchyard.core.config import AzureEnvironment, FrontendPorts, ServiceConfig, ServiceContext
from switchyard.core.findings import Finding, FindingKind, ScanSummary, Severity
from switchyard.core.image_metadata import ImageMetadata
from switchyard.core.state import (
    BackendHealth,
    GatewayObservation,
    ImageObservation,
    InstanceObservation,
    PoolObservation,
    ScaleSetObservation,
    ServiceObservation,
)
from switchyard.core.topology import Color, Topology
from switchyard.core.versions import ImageVersion

SERVICE, ENVIRONMENT = "sample", "production"
TOPOLOGY = Topology(service=SERVICE, environment=ENVIRONMENT)
V1 = "1000000.20261100.1"
V2 = "1001000.20261100.1"
OBSERVED_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def context(capacity: int = 3) -> ServiceContext:
    return ServiceContext(
        environment=AzureEnvironment(
            name=ENVIRONMENT,
            auth="emulator",
            emulator_file="emulator.json",  # never read: the rules only need names
            resource_group="rg-sample",
            gallery="switchyard_gallery",
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3lib3gga2V5IGZvciB0ZXN0cyBvbmx5 test",
        ),
        service=ServiceConfig(
            name=SERVICE,
            app_dir="apps/sample",
            capacity=capacity,
            frontend_ports={ENVIRONMENT: FrontendPorts(production=8080, test=8081)},
        ),
    )


def address(color: Color, instance: int) -> str:
    return f"127.{1 if color is Color.BLUE else 2}.0.{instance + 4}"


def scale_set(
    color: Color, version: str | None, count: int, *, capacity: int | None = None, vm_size: str = "Standard_B2s"
) -> ScaleSetObservation:
    return ScaleSetObservation(
        name=TOPOLOGY.scale_set(color),
        color=color,
        exists=version is not None,
        etag='"ss-1"' if version is not None else None,
        capacity=count if capacity is None else capacity,
        vm_size=vm_size if version is not None else None,
        image_version=version,
        instances=[
            InstanceObservation(
                instance_id=str(i),
                name=f"{TOPOLOGY.scale_set(color)}_{i}",
                private_ip=address(color, i),
                image_version=version,
                latest_model_applied=True,
                provisioning_state="Succeeded",
            )
            for i in range(count)
        ],
    )


def observed(
    blue: ScaleSetObservation,
    green: ScaleSetObservation,
    *,
    live: Color | None = Color.BLUE,
    canary: list[str] | None = None,
    routed: bool | None = None,
    health: dict[str, BackendHealth] | None = None,
    healthy: bool = True,
    test_pool: Color | None = None,
    gateway_exists: bool = True,
    tags: dict[str, str] | None = None,
) -> ServiceObservation:
    """A service whose production rule points at `live`'s pool, or at its canary pool when `routed`
    (by default: when there is a `canary`), the canary pool holding `canary` (addresses of the idle
    color) beside the live color's instances; every address is Up unless `health` says otherwise."""
    routed = bool(canary) if routed is None else routed
    pools = {}
    for color, ss in ((Color.BLUE, blue), (Color.GREEN, green)):
        extra = (canary or []) if color is live else []
        for name, members in (
            (Topology.pool(color), ss.addresses),
            (Topology.canary_pool(color), [*ss.addresses, *extra]),
        ):
            states: dict[str, BackendHealth] = {a: "Up" if healthy else "Down" for a in members}
            states.update({a: s for a, s in (health or {}).items() if a in states})
            pools[name] = PoolObservation(name=name, member_addresses=members, health=states)
    test = test_pool if test_pool is not None else (live.other if live is not None else None)
    production = None
    if gateway_exists and live is not None:
        production = Topology.canary_pool(live) if routed else Topology.pool(live)
    return ServiceObservation(
        topology=TOPOLOGY,
        observed_at=OBSERVED_AT,
        gateway=GatewayObservation(
            name=TOPOLOGY.gateway,
            exists=gateway_exists,
            etag='W/"1"' if gateway_exists else None,
            production_pool=production,
            test_pool=test.value if gateway_exists and test is not None else None,
            pools=pools if gateway_exists else {},
            tags=tags or {},
        ),
        scale_sets={Color.BLUE: blue, Color.GREEN: green},
    )


def image(
    version: str = V2,
    *,
    scan_gate_passed: bool = True,
    rolled_back: bool = False,
    replication: dict[str, str] | None = None,
) -> ImageObservation:
    """An image version in the gallery, its history in its tags as the image pipeline writes them."""
    metadata = ImageMetadata(
        service=SERVICE,
        version=ImageVersion.from_gallery_version(version),
        git_commit="0123abcd0123abcd0123abcd0123abcd0123abcd",
        scan_summary=ScanSummary.of(
            [Finding(id="CVE-1", kind=FindingKind.VULNERABILITY, severity=Severity.HIGH, package="p")]
        ),
        scan_gate_passed=scan_gate_passed,
        sbom_sha256="ab" * 32,
        built_at=OBSERVED_AT,
        rolled_back=rolled_back,
    )
    return ImageObservation(
        gallery_version=version,
        exists=True,
        tags=metadata.to_tags(),
        replication={"westeurope": "Completed"} if replication is None else replication,
    )


def missing_image(version: str = V2) -> ImageObservation:
    return ImageObservation(gallery_version=version, exists=False)


def quota(free_vcpus: int = 100, *, vcpus_per_vm: int = 2) -> ComputeQuota:
    return ComputeQuota(
        location="westeurope",
        vm_size="Standard_B2s",
        vcpus_per_vm=vcpus_per_vm,
        family="standardBSFamily",
        usages={"cores": QuotaUsage(name="cores", current=200 - free_vcpus, limit=200)},
    )
