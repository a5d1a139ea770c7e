"""Constants shared by the emulator unit tests (ids as the control plane canonicalises them)."""

GATEWAY_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-test"
    "/providers/microsoft.network/applicationgateways/sample-test-agw"
)
SCALE_SET_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-test"
    "/providers/microsoft.compute/virtualmachinescalesets/sample-test-blue"
)
# 2026-01-01T00:00:00Z: a whole minute, so bucket boundaries are easy to reason about.
T0 = 1_767_225_600.0
