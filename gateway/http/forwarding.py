"""Proxy identity headers added to a forwarded request: X-Forwarded-For/-Proto/-Host and Via.

Owns their exact values. Must never decide trust (that belongs to a future trusted-proxy
policy); for now the peer is always appended and proto/host are always ours.
"""

from __future__ import annotations

from gateway.http.model import HeaderList

VIA_TOKEN = b"1.1 expressgateway"
_REPLACED = frozenset((b"x-forwarded-proto", b"x-forwarded-host"))


def add_forwarding_headers(
    headers: HeaderList, *, peer_ip: str, proto: bytes, host: bytes | None
) -> HeaderList:
    """A copy of ``headers`` with the forwarding fields applied.

    X-Forwarded-For keeps every inbound value and appends the peer; X-Forwarded-Proto and
    X-Forwarded-Host are replaced by what this proxy saw; Via gets our token appended.
    """
    xff: list[bytes] = []
    via: list[bytes] = []
    out: HeaderList = []
    for name, value in headers:
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
