"""The api-versions each resource type answers to.

The first of each set is what the pinned SDKs send (azure-mgmt-compute 39, -network 33.1,
-monitor 7, -resource 26); the others are versions whose wire shape for the fields the emulator
honours is the same (the Azure REST API spec examples the contract tests replay use some of them).
An api-version outside the set is refused like ARM does (400 NoRegisteredProviderFound).
"""

from __future__ import annotations

import re

RESOURCE_GROUPS = frozenset({"2025-04-01", "2024-11-01", "2024-03-01", "2022-09-01", "2021-04-01"})
SCALE_SETS = frozenset({"2026-04-01", "2025-04-01", "2024-11-01", "2024-07-01", "2024-03-01"})
GALLERIES = frozenset({"2026-03-03", "2025-03-03", "2024-03-03", "2023-07-03"})
NETWORK = frozenset({"2026-03-01", "2025-05-01", "2025-03-01", "2025-01-01", "2024-07-01", "2024-05-01"})
# the network SDK lists scale-set NICs under Microsoft.Compute with this old version
SCALE_SET_NICS = frozenset({"2018-10-01", "2017-03-30"})
METRICS = frozenset({"2024-02-01", "2023-10-01", "2021-05-01", "2018-01-01"})
# resource_skus.list keeps an older version than the rest of the compute SDK
RESOURCE_SKUS = frozenset({"2021-07-01", "2019-04-01"})
AUTOSCALE = frozenset({"2022-10-01", "2021-05-01-preview", "2015-04-01"})

API_VERSION_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}(-(preview|alpha|beta|privatepreview))?$", re.IGNORECASE)
# Log Analytics workspaces (the emulator's own, read-only): versions whose Workspace shape carries
# properties.customerId.
WORKSPACES = frozenset({"2023-09-01", "2022-10-01", "2020-08-01"})
# Diagnostic settings: Azure's current version, as clients call it through the SDK pipeline
# (azure-mgmt-monitor 7 has no diagnostic_settings operations).
DIAGNOSTIC_SETTINGS = frozenset({"2021-05-01-preview"})
# Storage accounts: what azure-mgmt-storage 25 sends first, then versions whose StorageAccount shape for
# the fields the emulator honours is the same (the spec examples are 2025-01-01).
STORAGE = frozenset({"2026-09-01", "2025-08-01", "2025-06-01", "2025-01-01", "2024-01-01", "2023-05-01"})
