"""The pure pieces of issue 17 items 7 and 15: IPv6 clients keyed by prefix in the
connection gate, and the descriptor budget (raised soft limit, "auto" in-flight cap)."""

from __future__ import annotations

import pytest

from gateway.fd_budget import (
    AUTO_INFLIGHT_CEILING,
    WORKER_RESERVED_FDS,
    auto_inflight_cap,
    raised_soft_limit,
)
from gateway.limits import ConnectionGate, client_key

INF = -1  # resource.RLIM_INFINITY on Linux


@pytest.mark.parametrize(
    ("ip", "prefix", "key"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),  # v4-mapped: the IPv4 client it is
        ("fe80::1%eth0", 64, "fe80::/64"),
    ],
)
def test_client_key(ip: str, prefix: int, key: str) -> None:
    assert client_key(ip, prefix) == key


def test_gate_shares_the_per_ip_cap_across_one_slash_64() -> None:
    gate = ConnectionGate(per_ip_cap=2, inflight_cap=100)
    assert gate.admit("2001:db8::1") is None
    assert gate.admit("2001:db8::2") is None
    assert gate.admit("2001:db8::ffff:3") == "per_ip_cap"
    assert gate.admit("2001:db8:0:1::1") is None  # the next /64
    gate.release("2001:db8::1")
    assert gate.admit("2001:db8::77") is None
    assert gate.per_ip == {"2001:db8::/64": 2, "2001:db8:0:1::/64": 1}


def test_gate_per_address_when_prefix_is_128() -> None:
    gate = ConnectionGate(per_ip_cap=1, inflight_cap=100, ipv6_prefix=128)
    assert [gate.admit(f"2001:db8::{i}") for i in range(1, 4)] == [None, None, None]


@pytest.mark.parametrize(
    ("soft", "hard", "nr_open", "expected"),
    [
        (1024, 524288, 1 << 20, 524288),  # systemd's default pair
        (1024, 1024, 1 << 20, 1024),
        (4096, 1024, 1 << 20, 4096),  # never lowered
        (1024, INF, 1 << 20, 1 << 20),  # unlimited hard: nr_open is the real ceiling
        (INF, INF, 1 << 20, INF),
    ],
)
def test_raised_soft_limit(soft: int, hard: int, nr_open: int, expected: int) -> None:
    assert raised_soft_limit(soft, hard, infinity=INF, nr_open=nr_open) == expected


def test_auto_inflight_cap_follows_the_costliest_listener() -> None:
    usable = 1024 - WORKER_RESERVED_FDS
    assert auto_inflight_cap(1024, ["h1"]) == usable // 2
    assert auto_inflight_cap(1024, ["h1", "tcp"]) == usable // 6  # splice pipes
    assert auto_inflight_cap(1024, ["udp"]) == usable // 2
    assert auto_inflight_cap(1024, ["h1"], pooled_upstream_fds=64) == (usable - 64) // 2
    assert auto_inflight_cap(1 << 20, ["h1"]) == AUTO_INFLIGHT_CEILING
    assert auto_inflight_cap(10, ["tcp"]) == 1  # never 0: one connection can always try
