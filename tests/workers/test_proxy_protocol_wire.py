"""gateway/proxy_protocol.py against the bytes the HAProxy PROXY protocol spec defines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy_protocol import (
    ProxyHeaderError,
    encode,
    encode_v1,
    encode_v2,
    encode_v2_local,
)

SIG = bytes.fromhex("0d0a0d0a000d0a515549540a")  # section 2.2, "\r\n\r\n\0\r\nQUIT\n"


def test_v2_signature_is_the_specs() -> None:
    assert SIG == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def test_v2_tcp4_bytes() -> None:
    header = encode_v2(("192.0.2.1", 56324), ("198.51.100.7", 443))
    assert header == SIG + bytes.fromhex(
        "21"  # version 2, command PROXY
        "11"  # AF_INET, STREAM
        "000c"  # 12 address bytes follow
        "c0000201"  # 192.0.2.1
        "c6336407"  # 198.51.100.7
        "dc04"  # 56324
        "01bb"  # 443
    )
    assert len(header) == 16 + 12


def test_v2_tcp6_bytes() -> None:
    header = encode_v2(("2001:db8::1", 1234), ("2001:db8::2", 80))
    assert header == SIG + bytes.fromhex(
        "21"
        "21"  # AF_INET6, STREAM
        "0024"  # 36 address bytes
        "20010db8000000000000000000000001"
        "20010db8000000000000000000000002"
        "04d2"
        "0050"
    )


def test_v2_local_has_no_addresses() -> None:
    assert encode_v2_local() == SIG + bytes.fromhex("20000000")


def test_v1_lines() -> None:
    assert encode_v1(("192.0.2.1", 56324), ("198.51.100.7", 443)) == (
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
    )
    assert encode_v1(("2001:db8::1", 1234), ("2001:db8::2", 80)) == (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n"
    )


def test_v4_mapped_client_on_a_dual_stack_socket_is_ipv4() -> None:
    assert encode_v1(("::ffff:192.0.2.9", 1), ("::ffff:192.0.2.10", 2)) == (
        b"PROXY TCP4 192.0.2.9 192.0.2.10 1 2\r\n"
    )


def test_mixed_families_are_expressed_as_ipv6() -> None:
    header = encode_v2(("192.0.2.1", 1), ("2001:db8::2", 2))
    assert header[13] == 0x21
    assert header[16:32] == bytes.fromhex("00000000000000000000ffffc0000201")


def test_scope_ids_are_dropped() -> None:
    assert encode_v1(("fe80::1%eth0", 5), ("fe80::2%eth0", 6)) == (
        b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n"
    )


@pytest.mark.parametrize(
    ("source", "destination"),
    [(("example.com", 1), ("192.0.2.1", 2)), (("192.0.2.1", 70000), ("192.0.2.2", 1))],
)
def test_unencodable_addresses_raise(source: tuple[str, int], destination: tuple[str, int]) -> None:
    with pytest.raises(ProxyHeaderError):
        encode("v2", source, destination)
    with pytest.raises(ProxyHeaderError):
        encode("v1", source, destination)


ips = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str),
)
ports = st.integers(0, 65535)


@given(ips, ports, ips, ports)
def test_v1_fits_the_spec_limit_and_v2_length_matches(
    src: str, sport: int, dst: str, dport: int
) -> None:
    line = encode_v1((src, sport), (dst, dport))
    assert len(line) <= 107 and line.endswith(b"\r\n") and line.count(b"\r\n") == 1
    header = encode_v2((src, sport), (dst, dport))
    assert header[:12] == SIG and header[12] == 0x21
    assert int.from_bytes(header[14:16], "big") == len(header) - 16
    assert header[-4:] == sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
