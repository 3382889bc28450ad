"""The loopback rule every aopkit server applies (Studio, ``aopkit serve``): what counts as an
address only this machine can reach."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and every loopback address (``127.0.0.0/8``, ``::1``, bracketed or
    not). Any other name is False: it may resolve beyond loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
