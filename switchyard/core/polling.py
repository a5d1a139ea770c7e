"""How often switchyard looks at the cloud while it waits for something: soon at first, then less
and less often.

A look at a service (its gateway and backend health, both scale sets with their instances and
network interfaces) costs about ten Azure Resource Manager reads. ARM gives a subscription, per
service principal and region, a bucket of 250 reads that refills at 25 a second ("Request limits and
throttling", token bucket table: https://learn.microsoft.com/azure/azure-resource-manager/management/
request-limits-and-throttling); past it, every read of that principal answers 429, a rollback's
reads too. New instances take a minute or more to boot on Azure, and the monthly patch's releases
wait for theirs at the same time: looking twice a second each, twenty of them would ask for 400
reads a second. Looking again soon still matters, since the first looks often find the work done
already (the emulator starts an instance in a second or two).
"""

from __future__ import annotations

from collections.abc import Iterator

# A wait's looks: the first after FIRST_LOOK_S, each next one GROWTH times later, at most MAX_LOOK_S
# apart. Over a two-minute boot that is about 30 looks rather than 240.
FIRST_LOOK_S = 0.5
GROWTH = 1.5
MAX_LOOK_S = 5.0


def pauses(first_s: float = FIRST_LOOK_S, max_s: float = MAX_LOOK_S, growth: float = GROWTH) -> Iterator[float]:
    """The pauses between the looks of one wait, without end: first_s, then growing by `growth`,
    never over max_s."""
    if not 0 < first_s <= max_s or growth < 1:
        raise ValueError(f"pauses need 0 < first_s <= max_s and growth >= 1, not {first_s}, {max_s}, {growth}")
    pause = first_s
    while True:
        yield pause
        pause = min(max_s, pause * growth)
