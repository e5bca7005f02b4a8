"""Where the server listens: is its bind address reachable only from this machine?"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True when ``host`` (a bind address) accepts connections from this machine only.

    ``127.0.0.0/8``, ``::1`` and ``localhost`` are loopback; the wildcard (``0.0.0.0``, ``::``,
    ``""``), any other address, and any other host name (which could resolve anywhere) are not.
    """
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
