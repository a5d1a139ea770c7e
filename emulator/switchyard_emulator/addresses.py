"""Where the emulator's gateway frontends listen on this machine.

Azure gives an Application Gateway v2 private frontend a static address the client chooses inside
the gateway's subnet (e.g. 10.0.0.10 in 10.0.0.0/24); the emulator reports exactly that address,
so every Azure rule about it holds unchanged (inside the subnet, not one of the five reserved
addresses, not used twice, NSG destinations compared with the subnet's prefix). Such an address
cannot be bound on a developer's machine, so the listeners of a private frontend bind a loopback
alias derived from it by a fixed rule anyone can apply:

    a.b.c.d  ->  127.b.c.d        (10.0.0.10 -> 127.0.0.10, 192.168.4.20 -> 127.168.4.20)

The public frontend is 127.0.0.1, which no private frontend maps to: the only addresses that would
(a.0.0.1) are the second address of any subnet holding them (Azure's smallest subnet is a /29), one
of the first four, which Azure reserves. Two private
addresses that differ only in their first octet share an alias; both can listen there as long as
their frontend ports differ (otherwise the second write is refused as FrontendPortInUse).
"""

from __future__ import annotations

import ipaddress

PUBLIC_FRONTEND_HOST = "127.0.0.1"


def loopback_alias(private_ip: str) -> str:
    """The loopback address the emulator binds for a private frontend address (IPv4)."""
    address = ipaddress.IPv4Address(private_ip)
    return str(ipaddress.IPv4Address((127 << 24) | (int(address) & 0x00FFFFFF)))
