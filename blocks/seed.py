"""Seed the fleet's blocks: what fleet.yaml describes becomes the blocks users edit in the UI.

Only missing blocks are created; an existing block is the configuration and is never overwritten.
"""

from __future__ import annotations

from prefect.blocks.core import Block

from blocks import AzureEnvironmentBlock, ImageRecipeBlock, ReleasePolicyBlock, ScanPolicyBlock, ServiceBlock
from switchyard.core.fleet import Fleet


def fleet_blocks(fleet: Fleet) -> list[tuple[str, Block]]:
    """(document name, block) for every entry of the fleet."""
    entries: list[tuple[str, Block]] = []
    entries += [(n, AzureEnvironmentBlock(**e.model_dump())) for n, e in fleet.environments.items()]
    entries += [(n, ServiceBlock(**s.model_dump())) for n, s in fleet.services.items()]
    entries += [(n, ReleasePolicyBlock(**p.model_dump())) for n, p in fleet.release_policies.items()]
    entries += [(n, ScanPolicyBlock(**p.model_dump())) for n, p in fleet.scan_policies.items()]
    entries += [(n, ImageRecipeBlock(**fleet.recipe(n).model_dump())) for n in fleet.services]
    return entries


async def seed_blocks(fleet: Fleet) -> list[str]:
    """Create the blocks fleet.yaml describes that do not exist yet; return what was created."""
    created: list[str] = []
    for name, block in fleet_blocks(fleet):
        try:
            await type(block).aload(name)
            continue
        except ValueError:
            pass  # no such document yet
        await block.asave(name)
        created.append(f"{block.get_block_type_slug()}/{name}")
    return created
