"""QUIC's public header: what a load balancer may read of a packet without decrypting it.

Owns `parse_public_header`, which reads the version-independent invariants (RFC 8999
§5) — header form, version, destination and source connection IDs — plus the long
packet type of the versions we know (v1, RFC 9000 §17.2; v2, RFC 9369 §3.2), and
recognises Version Negotiation (version 0, RFC 8999 §6). Only the first packet of a
datagram is read: coalesced packets share its connection IDs (RFC 9000 §12.2).
A short header (RFC 9000 §17.3) does not carry its DCID length; the caller passes the
length the servers issue.

Must never: decrypt, remove header protection, read past the connection IDs, or raise on
any input (malformed bytes give None).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

QUIC_V1 = 0x0000_0001
QUIC_V2 = 0x6B33_43CF
CID_MAX_BYTES = 20  # RFC 9000 §17.2: v1 connection IDs are at most 20 bytes
MIN_INITIAL_DATAGRAM_BYTES = 1200  # RFC 9000 §14.1: clients pad Initial datagrams to this


class PacketKind(enum.IntEnum):
    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    VERSION_NEGOTIATION = 4
    SHORT = 5
    UNKNOWN_VERSION = 6  # a long header of a version this parser does not know


# Long packet type bits ((first byte >> 4) & 3) per version.
_V1_TYPES = (PacketKind.INITIAL, PacketKind.ZERO_RTT, PacketKind.HANDSHAKE, PacketKind.RETRY)
_V2_TYPES = (PacketKind.RETRY, PacketKind.INITIAL, PacketKind.ZERO_RTT, PacketKind.HANDSHAKE)
_TYPES_BY_VERSION = {QUIC_V1: _V1_TYPES, QUIC_V2: _V2_TYPES}


@dataclass(frozen=True, slots=True)
class PublicHeader:
    kind: PacketKind
    version: int  # 0 for Version Negotiation; -1 for a short header (no version field)
    dcid: bytes
    scid: bytes  # b"" for a short header

    @property
    def is_long(self) -> bool:
        return self.kind is not PacketKind.SHORT


def parse_public_header(datagram: bytes, short_dcid_len: int) -> PublicHeader | None:
    """The public header of the first packet in `datagram`, or None if it is not QUIC."""
    size = len(datagram)
    if size == 0:
        return None
    first = datagram[0]
    if not first & 0x80:
        end = 1 + short_dcid_len
        if short_dcid_len < 1 or short_dcid_len > CID_MAX_BYTES or size < end:
            return None
        return PublicHeader(PacketKind.SHORT, -1, datagram[1:end], b"")
    if size < 7:
        return None
    version = int.from_bytes(datagram[1:5], "big")
    dcid_len = datagram[5]
    if dcid_len > CID_MAX_BYTES:
        return None
    scid_at = 6 + dcid_len
    if size < scid_at + 1:
        return None
    scid_len = datagram[scid_at]
    if scid_len > CID_MAX_BYTES or size < scid_at + 1 + scid_len:
        return None
    dcid = datagram[6:scid_at]
    scid = datagram[scid_at + 1 : scid_at + 1 + scid_len]
    if version == 0:
        kind = PacketKind.VERSION_NEGOTIATION
    else:
        types = _TYPES_BY_VERSION.get(version)
        kind = PacketKind.UNKNOWN_VERSION if types is None else types[(first >> 4) & 3]
    return PublicHeader(kind, version, dcid, scid)
