"""Room to double: a blue-green or canary release runs the new color beside the live one, so the
region's compute quota must hold both at once. Pure: quota figures in, the problems found out."""

from __future__ import annotations

from pydantic import BaseModel, Field

REGIONAL_VCPUS = "cores"  # Azure's usage name for "Total Regional vCPUs"


class QuotaUsage(BaseModel):
    name: str
    current: int = Field(ge=0)
    limit: int = Field(ge=0)

    @property
    def free(self) -> int:
        return max(0, self.limit - self.current)


class ComputeQuota(BaseModel):
    """A location's compute usage and what one VM of the service's size takes."""

    location: str
    vm_size: str
    vcpus_per_vm: int = Field(ge=1)
    family: str = ""  # the size's family quota name (e.g. standardBSFamily); empty when unknown
    usages: dict[str, QuotaUsage]
    # Why the size cannot be deployed in the location for this subscription, whatever the quota
    # (Resource SKUs' `restrictions`, e.g. "NotAvailableForSubscription"); empty when it can.
    restrictions: list[str] = Field(default_factory=list)


def shortfall(quota: ComputeQuota, additional_vms: int) -> list[str]:
    """What stops `additional_vms` more VMs of the size from starting; empty when they fit.

    Both the regional vCPU quota and the size family's quota must hold them; a quota the
    location does not report is not checked (nothing to judge by, and Azure itself enforces it)."""
    if quota.restrictions:
        # Azure refuses such a size whatever the quota (SkuNotAvailable; "Resolve errors for SKU not
        # available"): no amount of quota makes room.
        return [
            f"VM size {quota.vm_size} cannot be deployed in {quota.location} for this subscription "
            f"({'; '.join(quota.restrictions)}): choose another vm_size for the service, or ask for the size"
        ]
    if additional_vms <= 0:
        return []
    needed = additional_vms * quota.vcpus_per_vm
    problems = []
    for name, label in ((REGIONAL_VCPUS, "total regional vCPUs"), (quota.family, f"{quota.family} vCPUs")):
        usage = quota.usages.get(name) if name else None
        if usage is not None and needed > usage.free:
            problems.append(
                f"{additional_vms} more {quota.vm_size} VM(s) need {needed} {label} in {quota.location}, but the "
                f"quota leaves {usage.free} (limit {usage.limit}, in use {usage.current}); ask for a quota "
                "increase, or lower the service's capacity"
            )
    return problems
