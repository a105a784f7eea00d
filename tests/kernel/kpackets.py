"""Crafted Ethernet frames for BPF_PROG_TEST_RUN tests (checksums are not checked by XDP)."""

from __future__ import annotations

import ipaddress
import struct

ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
ETH_DST = b"\x02\x00\x00\x00\x00\x02"


def eth(ethertype: int, payload: bytes, vlan: int | None = None, tpid: int = 0x8100) -> bytes:
    head = ETH_DST + ETH_SRC
    if vlan is not None:
        head += struct.pack("!HH", tpid, vlan)
    return head + struct.pack("!H", ethertype) + payload


def tcp(sport: int, dport: int, flags: int = 0x02) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(
    src: str, dst: str, proto: int, l4: bytes, *, frag_off: int = 0, options: bytes = b""
) -> bytes:
    ihl = 5 + len(options) // 4
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        ihl * 4 + len(l4),
        7,
        frag_off,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return head + options + l4


def ipv6(src: str, dst: str, nexthdr: int, l4: bytes) -> bytes:
    head = struct.pack("!IHBB", 6 << 28, len(l4), nexthdr, 64)
    return head + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + l4


def v4_frame(src: str, dst: str, proto: int, l4: bytes, **kw: object) -> bytes:
    return eth(0x0800, ipv4(src, dst, proto, l4, **kw))  # type: ignore[arg-type]


def v6_frame(src: str, dst: str, nexthdr: int, l4: bytes) -> bytes:
    return eth(0x86DD, ipv6(src, dst, nexthdr, l4))


def quic_long(dcid: bytes, first: int = 0xC0, scid: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A long-header packet (first 0xC0 = Initial) with some padding after the header."""
    return (
        bytes([first])
        + b"\x00\x00\x00\x01"
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + b"\x00" * 24
    )


def quic_short(dcid: bytes) -> bytes:
    return b"\x40" + dcid + b"\x00" * 24
