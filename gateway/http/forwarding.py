"""Proxy identity headers added to a forwarded request: X-Forwarded-For/-Proto/-Host and Via,
and whose word about the client's address is kept (the forwarding policy).

Owns their exact values and the trust rule (issue 17 item 14). The client-identity fields
(``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) that arrive are kept only when the
policy trusts the immediate peer: ``append`` (the default: kept, the peer appended, as
before), ``replace`` (dropped: the next hop hears only the peer's address), ``trusted``
(kept when the peer is in ``trusted_proxies``, dropped otherwise). Decided once per
connection (``keeps_inbound``), applied per request here and by the single-pass form in
``h1_relay_heads``. Must never do I/O; X-Forwarded-Proto/-Host are always ours.
"""

from __future__ import annotations

import ipaddress
from typing import Final, Literal

from gateway.http.model import HeaderList

VIA_TOKEN = b"1.1 expressgateway"
_REPLACED = frozenset((b"x-forwarded-proto", b"x-forwarded-host"))
# What a client may claim about its own address: untrusted, these never reach the next hop.
CLIENT_IDENTITY_FIELDS: Final = frozenset((b"x-forwarded-for", b"forwarded", b"x-real-ip"))

ForwardedMode = Literal["append", "replace", "trusted"]
FORWARDED_MODES: Final = ("append", "replace", "trusted")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForwardingPolicy:
    """Whose X-Forwarded-For / Forwarded / X-Real-IP are believed. Immutable once built."""

    __slots__ = ("mode", "networks")

    def __init__(self, mode: str = "append", trusted_proxies: tuple[str, ...] = ()) -> None:
        """``trusted_proxies``: CIDRs (validated by the config); used by ``trusted`` only."""
        if mode not in FORWARDED_MODES:
            raise ValueError(f"forwarded_headers: {mode!r}")
        self.mode = mode
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies
        )

    def __eq__(self, other: object) -> bool:  # value semantics, as HttpLimits compares
        if not isinstance(other, ForwardingPolicy):
            return NotImplemented
        return self.mode == other.mode and self.networks == other.networks

    def __hash__(self) -> int:
        return hash((self.mode, self.networks))

    def __repr__(self) -> str:
        return f"ForwardingPolicy({self.mode!r}, {tuple(str(n) for n in self.networks)!r})"

    def keeps_inbound(self, peer_ip: str) -> bool:
        """Whether the client-identity fields from this peer are forwarded (then appended to)."""
        if self.mode == "append":
            return True
        if self.mode == "replace":
            return False
        try:
            addr = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False  # not an IP (a unix peer, "unknown"): never trusted
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)


def add_forwarding_headers(
    headers: HeaderList,
    *,
    peer_ip: str,
    proto: bytes,
    host: bytes | None,
    keep_inbound: bool = True,
) -> HeaderList:
    """A copy of ``headers`` with the forwarding fields applied.

    X-Forwarded-For keeps every inbound value (when ``keep_inbound``; otherwise inbound
    X-Forwarded-For, Forwarded and X-Real-IP are dropped) and appends the peer;
    X-Forwarded-Proto and X-Forwarded-Host are replaced by what this proxy saw; Via gets our
    token appended.
    """
    xff: list[bytes] = []
    via: list[bytes] = []
    out: HeaderList = []
    for name, value in headers:
        if not keep_inbound and name in CLIENT_IDENTITY_FIELDS:
            continue
        if name == b"x-forwarded-for":
            xff.append(value)
        elif name == b"via":
            via.append(value)
        elif name not in _REPLACED:
            out.append((name, value))
    xff.append(peer_ip.encode())
    via.append(VIA_TOKEN)
    out.append((b"x-forwarded-for", b", ".join(xff)))
    out.append((b"x-forwarded-proto", proto))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"via", b", ".join(via)))
    return out
