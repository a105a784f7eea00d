"""The forwarding rules on neutral heads: what every HTTP cell sends to the next hop.

Owns the one composition of the rules for the general proxy core: hop-by-hop removal
(RFC 9110 §7.6.1, Connection-listed names too), the fields we re-derive (framing, Expect,
X-Forwarded-Proto/-Host), X-Forwarded-For / Via / traceparent, and the authority the next
hop sees. The result is a neutral head whose header list carries no framing and no Host:
the per-version codecs add Host or ``:authority`` and Content-Length / Transfer-Encoding.
``te: trailers`` survives only toward HTTP/2 and HTTP/3 (RFC 9113 §8.2.2). The H1→H1 fast
path's single-pass form (``h1_relay_heads``) is held equal to these rules by the cell tests.
Must never parse a wire format, touch I/O or draw randomness of its own (``rng`` is given).
"""

from __future__ import annotations

import random
from typing import Final

from gateway.http.forwarding import CLIENT_IDENTITY_FIELDS, VIA_TOKEN
from gateway.http.hop_by_hop import HOP_BY_HOP
from gateway.http.model import HeaderList, RequestHead, ResponseHead, comma_tokens
from gateway.http.traceparent import child_context, parse_traceparent

_REQUEST_DROP: Final = HOP_BY_HOP | frozenset(
    (b"expect", b"content-length", b"host", b"x-forwarded-proto", b"x-forwarded-host")
)
_RESPONSE_DROP: Final = HOP_BY_HOP | frozenset((b"content-length",))
# HTTP/2 and HTTP/3 carry no connection-specific fields (RFC 9113 §8.2.2, RFC 9114 §4.2).
MULTIPLEXED: Final = frozenset(("h2", "h3"))


def _drop_set(base: frozenset[bytes], headers: HeaderList) -> frozenset[bytes]:
    listed = comma_tokens(headers, b"connection")
    return base | frozenset(listed) if listed else base


def forward_request(
    head: RequestHead,
    *,
    peer_ip: bytes,
    proto: bytes,
    next_hop: str,
    default_authority: bytes,
    rng: random.Random,
    keep_inbound: bool = True,
) -> RequestHead:
    """The head the next hop receives; ``head`` is admitted already and left unchanged.

    ``keep_inbound`` False: the client's X-Forwarded-For / Forwarded / X-Real-IP are
    dropped (the listener's forwarding policy does not believe this peer)."""
    drop = _drop_set(_REQUEST_DROP, head.headers)
    if not keep_inbound:
        drop = drop | CLIENT_IDENTITY_FIELDS
    te_trailers = next_hop in MULTIPLEXED and b"te" not in comma_tokens(head.headers, b"connection")
    out: HeaderList = []
    xff: list[bytes] = []
    via: list[bytes] = []
    traceparents: list[bytes] = []
    saw_tracestate = False
    saw_te_trailers = False
    for n, v in head.headers:
        if n in drop:
            if te_trailers and n == b"te" and b"trailers" in comma_tokens([(n, v)], b"te"):
                saw_te_trailers = True
            continue
        if n == b"x-forwarded-for":
            xff.append(v)
        elif n == b"via":
            via.append(v)
        elif n == b"traceparent":
            traceparents.append(v)
        else:
            if n == b"tracestate":
                saw_tracestate = True
            out.append((n, v))
    inbound = parse_traceparent(traceparents[0]) if len(traceparents) == 1 else None
    if inbound is None and saw_tracestate:
        # An invalid parent invalidates its tracestate (W3C Trace Context §3.3).
        out = [(n, v) for n, v in out if n != b"tracestate"]
    if saw_te_trailers:
        out.append((b"te", b"trailers"))
    authority = head.authority or default_authority
    xff.append(peer_ip)
    via.append(VIA_TOKEN)
    out.append((b"x-forwarded-for", b", ".join(xff)))
    out.append((b"x-forwarded-proto", proto))
    if head.authority:
        out.append((b"x-forwarded-host", head.authority))
    out.append((b"via", b", ".join(via)))
    out.append((b"traceparent", child_context(inbound, rng).encode()))
    return RequestHead(
        method=head.method,
        scheme=proto,
        authority=authority,
        path=head.path,
        headers=out,
        http_version=head.http_version,
    )


def forward_response(head: ResponseHead) -> ResponseHead:
    """The head the client receives: hop-by-hop and framing fields removed (the front's codec
    frames the body it actually sends); ``head`` is left unchanged."""
    drop = _drop_set(_RESPONSE_DROP, head.headers)
    return ResponseHead(
        status=head.status,
        reason=head.reason,
        headers=[(n, v) for n, v in head.headers if n not in drop],
        http_version=head.http_version,
    )
