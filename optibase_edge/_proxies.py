"""Who made the request: the client's IP address and scheme, behind trusted proxies (pure).

By default only the socket is believed: ``scope["client"]`` and
``scope["scheme"]``, whatever headers say, since any client can send
``X-Forwarded-For``. With ``trusted_proxies`` (CIDRs), a request whose socket
peer is one of them is read through its forwarding headers: the client is the
right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy (hops to
its left were written by the client and prove nothing), and the scheme is the
right-most ``X-Forwarded-Proto`` value (the one the nearest proxy set).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Literal

IpMode = Literal["full", "anonymized", "none"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks; raises ValueError naming the first bad entry."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def socket_client(scope: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(ip, scheme)`` of the socket's peer, as the server put them in the scope."""
    peer = scope.get("client")
    return (peer[0] if peer else None), scope.get("scheme", "http")


class TrustedProxies:
    """Reads a request's client IP and scheme through the proxies in *networks*."""

    def __init__(self, networks: Sequence[Network]) -> None:
        self._networks = tuple(networks)

    def client(
        self, scope: Mapping[str, Any], headers: Mapping[bytes, bytes]
    ) -> tuple[str | None, str]:
        """``(ip, scheme)`` of the client, as far as the trusted proxies vouch for it."""
        ip, scheme = socket_client(scope)
        if ip is None or not self._trusted(ip):
            return ip, scheme
        proto = headers.get(b"x-forwarded-proto")
        if proto:
            last = proto.rpartition(b",")[2].strip().lower()
            if last in (b"http", b"https"):
                scheme = last.decode()
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded:
            for hop in reversed(forwarded.decode("latin-1").split(",")):
                address = _address(hop)
                if address is None:
                    break  # a hop that is not an address: nothing to its left can be believed
                ip = str(address)
                if not self._trusted_address(address):
                    break
        return ip, scheme

    def _trusted(self, ip: str) -> bool:
        address = _address(ip)
        return address is not None and self._trusted_address(address)

    def _trusted_address(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class ClientReport:
    """The client's ``(ip, scheme)`` as an event reports them: through *proxies*, per *ip*."""

    __slots__ = ("_ip", "_proxies")

    def __init__(self, proxies: TrustedProxies | None, ip: IpMode) -> None:
        self._proxies = proxies
        self._ip: IpMode = ip

    def __call__(
        self, scope: Mapping[str, Any], headers: Mapping[bytes, bytes]
    ) -> tuple[str | None, str]:
        proxies = self._proxies
        ip, scheme = socket_client(scope) if proxies is None else proxies.client(scope, headers)
        return reported_ip(ip, self._ip), scheme


def reported_ip(ip: str | None, mode: IpMode) -> str | None:
    """What goes into Segment's ``context.ip``: all of it, its network (/24, /48), or nothing."""
    if ip is None or mode == "none":
        return None
    if mode == "full":
        return ip
    address = _address(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _address(text: str) -> Address | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
