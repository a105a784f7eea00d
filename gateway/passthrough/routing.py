"""Where a client's QUIC datagram goes, and what a backend's reply teaches.

Owns the routing decision of a passthrough listener, in this order:

1. not QUIC (no public header), or a packet only servers send (Retry, Version
   Negotiation) -> drop;
2. the DCID decodes to a QUIC-LB server ID -> that backend, no table;
3. the DCID is in the route table -> its backend (if that backend left the config,
   drop: the connection is not moved to a backend that cannot know it);
4. an Initial (or a long header of an unknown version) -> a new connection, if its
   datagram is padded to 1200 bytes (RFC 9000 §14.1) and its DCID is long enough; the
   caller picks the backend by consistent hash over the DCID and records the route;
5. otherwise the connection ID is one the server issued inside the encrypted channel
   (RFC 9000 §5.1.1): follow the client address's flow when it has one (and record the
   route, so the connection survives a later address change), else drop.

And `server_route`: which connection ID of a backend's long-header packet (Initial,
Handshake, Retry SCID, RFC 9000 §7.2 and §17.2.5) must be recorded for that backend.
Must never: pick a backend itself (the balancer does), touch a socket, or read a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.passthrough.cid_routes import CidRoutes
from gateway.passthrough.public_header import (
    MIN_INITIAL_DATAGRAM_BYTES,
    PacketKind,
    PublicHeader,
)
from gateway.passthrough.quic_lb import QuicLbDecoder


class Via(enum.Enum):
    QUIC_LB = "quic_lb"
    TABLE = "table"
    NEW = "new"  # a new connection: the caller picks by hash over the DCID
    ADDRESS = "address"  # the client address's flow
    DROP = "drop"


# Drop reasons, as counted in expressgateway_security_rejections_total{reason}.
NOT_QUIC = "quic_not_quic"
SERVER_ONLY = "quic_server_only_packet"
SMALL_INITIAL = "quic_small_initial"
SHORT_DCID = "quic_short_dcid"
UNKNOWN_CID = "quic_unknown_cid"
BACKEND_GONE = "quic_backend_gone"

_NEW_KINDS = frozenset({PacketKind.INITIAL, PacketKind.UNKNOWN_VERSION})
_SERVER_ONLY = frozenset({PacketKind.RETRY, PacketKind.VERSION_NEGOTIATION})
_LEARN_FROM_SERVER = frozenset({PacketKind.INITIAL, PacketKind.HANDSHAKE, PacketKind.RETRY})


@dataclass(frozen=True, slots=True)
class ClientRoute:
    via: Via
    backend: int | None = None  # backend index (QUIC_LB, TABLE, ADDRESS)
    record: bool = False  # the caller records dcid -> the backend it uses
    reason: str = ""  # why it was dropped


DROP_NOT_QUIC = ClientRoute(Via.DROP, reason=NOT_QUIC)


def route_client_packet(
    header: PublicHeader | None,
    datagram_bytes: int,
    *,
    routes: CidRoutes,
    quic_lb: QuicLbDecoder | None,
    index_of: Mapping[int, int],
    address_backend: int | None,
    min_dcid_len: int,
    now: float,
) -> ClientRoute:
    """Decide for one client datagram; `index_of` maps backend keys to current indices."""
    if header is None:
        return DROP_NOT_QUIC
    kind = header.kind
    if kind in _SERVER_ONLY:
        return ClientRoute(Via.DROP, reason=SERVER_ONLY)
    dcid = header.dcid
    if quic_lb is not None:
        i = quic_lb.decode(dcid)
        if i is not None:
            return ClientRoute(Via.QUIC_LB, i)
    if dcid:
        key = routes.lookup(dcid, now)
        if key is not None:
            i = index_of.get(key)
            if i is None:
                return ClientRoute(Via.DROP, reason=BACKEND_GONE)
            return ClientRoute(Via.TABLE, i)
    if kind in _NEW_KINDS:
        if datagram_bytes < MIN_INITIAL_DATAGRAM_BYTES:
            return ClientRoute(Via.DROP, reason=SMALL_INITIAL)
        if len(dcid) < min_dcid_len:
            return ClientRoute(Via.DROP, reason=SHORT_DCID)
        # A version we cannot read is answered statelessly (Version Negotiation): no route.
        return ClientRoute(Via.NEW, record=kind is PacketKind.INITIAL)
    if address_backend is not None:
        return ClientRoute(Via.ADDRESS, address_backend, record=bool(dcid))
    return ClientRoute(Via.DROP, reason=UNKNOWN_CID)


def server_route(
    header: PublicHeader | None, backend: int, quic_lb: QuicLbDecoder | None
) -> bytes | None:
    """The SCID to record for backend index `backend`, or None (nothing to learn, or a
    QUIC-LB CID that already routes to it without the table)."""
    if header is None or header.kind not in _LEARN_FROM_SERVER or not header.scid:
        return None
    if quic_lb is not None and quic_lb.decode(header.scid) == backend:
        return None
    return header.scid
