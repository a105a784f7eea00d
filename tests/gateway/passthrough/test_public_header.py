"""The QUIC public-header parser: never raises, reads exactly the invariants, and agrees
with aioquic's own packets (Initial, Retry, Version Negotiation)."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import encode_quic_retry, encode_quic_version_negotiation
from hypothesis import given
from hypothesis import strategies as st

from gateway.passthrough.public_header import (
    QUIC_V1,
    QUIC_V2,
    PacketKind,
    parse_public_header,
)

cids = st.binary(min_size=0, max_size=20)


@given(st.binary(max_size=64), st.integers(min_value=-1, max_value=30))
def test_never_raises_and_reads_within_the_datagram(data: bytes, short_len: int) -> None:
    h = parse_public_header(data, short_len)
    if h is not None:
        assert len(h.dcid) <= 20 and len(h.scid) <= 20
        assert h.dcid in data


def _long(first: int, version: int, dcid: bytes, scid: bytes, rest: bytes = b"") -> bytes:
    return (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + rest
    )


V1 = [PacketKind.INITIAL, PacketKind.ZERO_RTT, PacketKind.HANDSHAKE, PacketKind.RETRY]
V2 = [PacketKind.RETRY, PacketKind.INITIAL, PacketKind.ZERO_RTT, PacketKind.HANDSHAKE]


@given(cids, cids, st.integers(0, 3), st.binary(max_size=40), st.sampled_from([QUIC_V1, QUIC_V2]))
def test_long_headers_of_known_versions(
    dcid: bytes, scid: bytes, type_bits: int, rest: bytes, version: int
) -> None:
    h = parse_public_header(_long(0xC0 | (type_bits << 4), version, dcid, scid, rest), 8)
    assert h is not None
    assert (h.dcid, h.scid, h.version) == (dcid, scid, version)
    assert h.kind is (V1 if version == QUIC_V1 else V2)[type_bits]


@given(cids, cids, st.integers(2, 2**32 - 1).filter(lambda v: v not in (QUIC_V1, QUIC_V2)))
def test_unknown_versions_and_version_negotiation(dcid: bytes, scid: bytes, version: int) -> None:
    h = parse_public_header(_long(0xC0, version, dcid, scid), 8)
    assert h is not None and h.kind is PacketKind.UNKNOWN_VERSION and h.dcid == dcid
    vn = parse_public_header(_long(0x80, 0, dcid, scid, b"\0\0\0\1"), 8)
    assert vn is not None and vn.kind is PacketKind.VERSION_NEGOTIATION


@given(st.binary(min_size=1, max_size=40), st.integers(1, 20))
def test_short_header_takes_the_configured_dcid_length(data: bytes, n: int) -> None:
    datagram = bytes([0x40 | (data[0] & 0x3F)]) + data[1:]
    h = parse_public_header(datagram, n)
    if len(datagram) < 1 + n:
        assert h is None
    else:
        assert h is not None and h.kind is PacketKind.SHORT and h.dcid == datagram[1 : 1 + n]


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\xc0\x00\x00\x00\x01",  # cut inside the version / lengths
        _long(0xC0, QUIC_V1, b"x" * 21, b""),  # a v1 DCID may not exceed 20 bytes
        _long(0xC0, QUIC_V1, b"abcd", b"s" * 21),
        _long(0xC0, QUIC_V1, b"abcdefgh", b"abcd")[:-1],  # SCID cut short
    ],
)
def test_malformed_is_none(datagram: bytes) -> None:
    assert parse_public_header(datagram, 8) is None


def test_agrees_with_aioquic_packets() -> None:
    client = QuicConnection(configuration=QuicConfiguration(is_client=True))
    client.connect(("127.0.0.1", 4433), now=0.0)
    (initial, _addr), *_ = client.datagrams_to_send(now=0.0)
    h = parse_public_header(initial, 8)
    assert h is not None and h.kind is PacketKind.INITIAL and h.version == QUIC_V1
    assert h.dcid == client._peer_cid.cid and h.scid == client.host_cid
    assert len(initial) >= 1200  # what the router requires of a new connection

    odcid, scid = os.urandom(8), os.urandom(8)
    retry = encode_quic_retry(QUIC_V1, scid, client.host_cid, odcid, b"token")
    r = parse_public_header(retry, 8)
    assert r is not None and r.kind is PacketKind.RETRY and r.scid == scid

    vn = encode_quic_version_negotiation(scid, client.host_cid, [QUIC_V1])
    v = parse_public_header(vn, 8)
    assert v is not None and v.kind is PacketKind.VERSION_NEGOTIATION
