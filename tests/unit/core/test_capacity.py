"""Room to double: the quota check a release makes before it starts the new color."""

from __future__ import annotations

from switchyard.core.capacity import ComputeQuota, QuotaUsage, shortfall


def quota(regional: tuple[int, int], family: tuple[int, int] | None = None) -> ComputeQuota:
    usages = {"cores": QuotaUsage(name="cores", current=regional[0], limit=regional[1])}
    if family is not None:
        usages["standardBSFamily"] = QuotaUsage(name="standardBSFamily", current=family[0], limit=family[1])
    return ComputeQuota(
        location="westeurope", vm_size="Standard_B2s", vcpus_per_vm=2, family="standardBSFamily", usages=usages
    )


def test_vms_that_fit_both_quotas_leave_nothing_to_say() -> None:
    assert shortfall(quota((10, 100), (10, 16)), additional_vms=3) == []  # 6 vCPUs, 6 free in the family


def test_the_regional_quota_stops_what_it_cannot_hold_and_says_by_how_much() -> None:
    [problem] = shortfall(quota((95, 100)), additional_vms=3)
    assert problem.startswith("3 more Standard_B2s VM(s) need 6 total regional vCPUs in westeurope")
    assert "the quota leaves 5 (limit 100, in use 95)" in problem and "quota increase" in problem


def test_the_family_quota_is_checked_beside_the_regional_one() -> None:
    [problem] = shortfall(quota((10, 100), (12, 16)), additional_vms=3)
    assert "6 standardBSFamily vCPUs" in problem and "leaves 4" in problem
    assert len(shortfall(quota((99, 100), (16, 16)), additional_vms=1)) == 2


def test_nothing_to_add_needs_no_room_and_an_unreported_quota_is_not_judged() -> None:
    assert shortfall(quota((100, 100), (16, 16)), additional_vms=0) == []
    assert shortfall(quota((100, 100), (16, 16)), additional_vms=-2) == []  # the idle color is larger already
    assert shortfall(quota((0, 100)).model_copy(update={"usages": {}}), additional_vms=50) == []
