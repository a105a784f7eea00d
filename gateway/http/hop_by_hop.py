"""Hop-by-hop header removal (RFC 9110 §7.6.1) for every proxy leg.

Owns the hop-by-hop set and the Connection-listed names. Must never add headers.
"""

from __future__ import annotations

from gateway.http.model import HeaderList, comma_tokens

HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
    )
)


def strip_hop_by_hop(headers: HeaderList, *, next_hop_is_h2: bool = False) -> HeaderList:
    """A copy of ``headers`` without hop-by-hop fields.

    ``te: trailers`` survives only toward an HTTP/2 (or HTTP/3) next hop, the one value those
    protocols allow (RFC 9113 §8.2.2).
    """
    listed = frozenset(comma_tokens(headers, b"connection"))
    drop = HOP_BY_HOP | listed
    out: HeaderList = []
    for name, value in headers:
        if name in drop:
            if (
                next_hop_is_h2
                and name == b"te"
                and value.strip(b" \t").lower() == b"trailers"
                and b"te" not in listed
            ):
                out.append((name, b"trailers"))
            continue
        out.append((name, value))
    return out
