"""The handoff message between workers and its socket name (workers/quic_handoff.py), over a
real abstract Unix datagram socket pair."""

from __future__ import annotations

import os
import socket

import pytest

from workers.quic_handoff import decode_handoff, encode_handoff, handoff_address


def test_a_datagram_and_its_client_address_cross_to_the_owner() -> None:
    name = handoff_address(os.getpid(), "h3-test")
    assert name.startswith(b"\0")
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as owner,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other,
    ):
        owner.bind(name)
        for addr, data in ((("127.0.0.1", 50123), b"\x40" * 1200), (("::1", 443, 0, 0), b"x")):
            other.sendto(encode_handoff(addr, data), name)
            got = decode_handoff(owner.recv(70_000))
            assert got == ((addr[0], addr[1]), data)


def test_a_gone_owner_refuses_and_garbage_decodes_to_nothing() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other, pytest.raises(OSError):
        other.sendto(b"x", handoff_address(2**24 - 1, "nobody-listens"))
    assert decode_handoff(b"") is None
    assert decode_handoff(b"\x09abc") is None
