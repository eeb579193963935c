"""Which interface addresses the LAN transport listens and multicasts on.

python-zeroconf's default (``InterfaceChoice.All``) multicasts on every interface of the
machine: on a server that is every VPN, container bridge and uplink. So the transport is
always given explicit addresses: the ones ``--interface`` names (an interface name, or one
of its addresses), else :func:`default_address`, the address of the interface that holds the
IPv4 default route (loopback when there is none).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


class InterfaceError(ValueError):
    """An ``--interface`` that names no interface or address of this machine."""


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    addresses: tuple[str, ...]


def interfaces() -> list[Interface]:
    """The machine's interfaces and the addresses a socket can bind without a scope id
    (IPv4, and IPv6 but link-local), from ``ifaddr`` (a dependency of zeroconf)."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        addresses: list[str] = []
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if not ipaddress.ip_address(text).is_link_local:
                addresses.append(text)
        found.append(Interface(adapter.nice_name, tuple(addresses)))
    return found


def resolve_interfaces(specs: list[str], available: list[Interface] | None = None) -> list[str]:
    """The addresses that ``specs`` (interface names or addresses) pin, in order, no repeats.

    Raises:
        InterfaceError: a name or address that is not this machine's (the message lists
            what there is).
    """
    available = interfaces() if available is None else available
    by_name = {i.name: i for i in available}
    mine = {str(ipaddress.ip_address(a)) for i in available for a in i.addresses}
    chosen: list[str] = []
    for spec in specs:
        try:
            found = [str(ipaddress.ip_address(spec))]
        except ValueError:
            if spec not in by_name:
                raise InterfaceError(f"no interface named {spec!r}; this machine has "
                                     f"{', '.join(sorted(by_name)) or 'none'}") from None
            found = list(by_name[spec].addresses)
            if not found:
                raise InterfaceError(f"interface {spec!r} has no usable address") from None
        else:
            if found[0] not in mine:
                raise InterfaceError(f"{spec} is not an address of this machine; its addresses "
                                     f"are {', '.join(sorted(mine)) or 'none'}")
        chosen.extend(a for a in found if a not in chosen)
    return chosen


def default_address() -> str:
    """The address of the interface holding the IPv4 default route (no packet is sent), or
    loopback when there is none: never every interface of the machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
