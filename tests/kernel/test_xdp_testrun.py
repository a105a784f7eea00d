"""xdp_steer through BPF_PROG_TEST_RUN: verdicts, counters, target CPUs and hash agreement
with gateway.steering, on crafted packets (no traffic, no namespaces)."""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Iterator

import kpackets as kp
import pytest

from gateway import steering
from kernel.datapath import XDP_REASONS, Datapath
from kernel.testrun import run_xdp

pytestmark = pytest.mark.root

SEED = 0x5EED
SRV4, SRV6 = "10.1.0.1", "fd00:1::1"


@pytest.fixture
def dp(datapath: Datapath) -> Iterator[Datapath]:
    """A datapath steering to CPUs 0 and 1, with the test pinned to CPU 0 (trace slot)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    datapath.set_workers({0: {}, 1: {}})
    try:
        yield datapath
    finally:
        os.sched_setaffinity(0, before)


def run(dp: Datapath, frame: bytes) -> tuple[str, dict[str, int]]:
    verdict = run_xdp(dp.xdp_prog_fd, frame).verdict
    return verdict, dp.last_trace()[0]


def kernel_reason(name: str) -> int:
    return XDP_REASONS.index(name)


def total(dp: Datapath, reason: str) -> int:
    return sum(dp.stats()[reason])


def packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def test_tcp_v4_redirects_to_planned_cpu(dp: Datapath) -> None:
    verdict, trace = run(dp, kp.v4_frame("10.0.0.9", SRV4, 6, kp.tcp(40000, 80)))
    want = steering.flow_hash(packed("10.0.0.9"), packed(SRV4), 40000, 80, 6, seed=SEED)
    assert verdict == "REDIRECT"
    assert trace["hash"] == want
    assert trace["cpu"] == dp.plan.target_cpu(want)
    assert total(dp, "redirect_tcp") == 1


def test_kernel_hash_equals_python_hash(dp: Datapath) -> None:
    rng = random.Random(1)
    cpus_seen = set()
    for i in range(320):
        v6, proto, vlan = i % 2 == 1, (6, 17)[i // 2 % 2], (None, 5)[i // 4 % 2]
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        l4 = kp.tcp(sport, dport) if proto == 6 else kp.udp(sport, dport)
        if v6:
            src = str(ipaddress.IPv6Address(rng.randbytes(16)))
            frame = kp.eth(0x86DD, kp.ipv6(src, SRV6, proto, l4), vlan=vlan)
            want = steering.flow_hash(packed(src), packed(SRV6), sport, dport, proto, seed=SEED)
        else:
            src = str(ipaddress.IPv4Address(rng.randbytes(4)))
            frame = kp.eth(0x0800, kp.ipv4(src, SRV4, proto, l4), vlan=vlan)
            want = steering.flow_hash(packed(src), packed(SRV4), sport, dport, proto, seed=SEED)
        verdict, trace = run(dp, frame)
        assert (verdict, trace["hash"]) == ("REDIRECT", want), (i, src)
        assert trace["cpu"] == dp.plan.target_cpu(want)
        cpus_seen.add(trace["cpu"])
    assert cpus_seen == {0, 1}
    assert total(dp, "redirect_tcp") + total(dp, "redirect_udp") == 320


@pytest.mark.parametrize("tpid", [0x8100, 0x88A8])
def test_vlan_tagged(dp: Datapath, tpid: int) -> None:
    frame = kp.eth(0x0800, kp.ipv4("10.0.0.9", SRV4, 17, kp.udp(5000, 53)), vlan=42, tpid=tpid)
    verdict, trace = run(dp, frame)
    assert verdict == "REDIRECT"
    assert trace["hash"] == steering.flow_hash(
        packed("10.0.0.9"), packed(SRV4), 5000, 53, 17, seed=SEED
    )


def test_ip_options_shift_ports(dp: Datapath) -> None:
    frame = kp.v4_frame("10.0.0.9", SRV4, 6, kp.tcp(1111, 443), options=b"\x01\x01\x01\x00")
    _, trace = run(dp, frame)
    assert trace["hash"] == steering.flow_hash(
        packed("10.0.0.9"), packed(SRV4), 1111, 443, 6, seed=SEED
    )


@pytest.mark.parametrize(
    "frame",
    [
        kp.eth(0x0800, b""),  # Ethernet only (test-run refuses frames under 14 bytes)
        kp.eth(0x0800, b"\x45\x00\x00"),  # IPv4 header cut
        kp.eth(0x8100, b"\x00"),  # VLAN tag cut
        kp.v4_frame("10.0.0.9", SRV4, 6, kp.tcp(1, 2)[:10]),  # TCP header cut
        kp.eth(0x86DD, kp.ipv6("fd00::9", SRV6, 17, b"")[:30]),  # IPv6 header cut
        kp.eth(0x0800, b"\x42" + kp.ipv4("10.0.0.9", SRV4, 6, kp.tcp(1, 2))[1:]),  # IHL 2
    ],
)
def test_truncated_passes(dp: Datapath, frame: bytes) -> None:
    assert run(dp, frame)[0] == "PASS"
    assert total(dp, "pass_truncated") == 1


def test_not_ip_and_other_protocols_pass(dp: Datapath) -> None:
    assert run(dp, kp.eth(0x0806, b"\x00" * 28))[0] == "PASS"  # ARP
    assert run(dp, kp.v4_frame("10.0.0.9", SRV4, 1, b"\x08\x00" + b"\x00" * 6))[0] == "PASS"
    assert run(dp, kp.v6_frame("fd00::9", SRV6, 58, b"\x80\x00" + b"\x00" * 6))[0] == "PASS"
    assert total(dp, "pass_not_ip") == 1
    assert total(dp, "pass_other_proto") == 2


def test_fragments_hash_on_addresses(dp: Datapath) -> None:
    want = steering.flow_hash(packed("10.0.0.9"), packed(SRV4), 0, 0, 17, seed=SEED)
    first = kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(5000, 53, b"x" * 32), frag_off=0x2000)
    later = kp.v4_frame("10.0.0.9", SRV4, 17, b"y" * 40, frag_off=5)
    for frame in (first, later):
        verdict, trace = run(dp, frame)
        assert (verdict, trace["hash"]) == ("REDIRECT", want)
    v6 = kp.v6_frame("fd00::9", SRV6, 44, b"\x11\x00\x00\x01\x00\x00\x00\x07" + b"z" * 16)
    verdict, trace = run(dp, v6)
    assert verdict == "REDIRECT"
    assert trace["hash"] == steering.flow_hash(packed("fd00::9"), packed(SRV6), 0, 0, 44, seed=SEED)
    assert total(dp, "redirect_fragment") == 3


def test_quic_dcid_steering(dp: Datapath) -> None:
    dp.set_quic({4433}, short_dcid_len=8)
    dcid = bytes.fromhex("e5000112233445566778")[:8]  # not one of ours (marker 230)
    for payload in (kp.quic_long(dcid), kp.quic_long(dcid, first=0xE0), kp.quic_short(dcid)):
        for sport in (1000, 2000):  # the client's port may change: the DCID keeps the CPU
            verdict, trace = run(
                dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(sport, 4433, payload))
            )
            assert (verdict, trace["hash"]) == ("REDIRECT", steering.cid_hash(dcid, seed=SEED))
    assert total(dp, "redirect_quic") == 6
    # empty DCID: the 4-tuple decides
    verdict, trace = run(
        dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(1000, 4433, kp.quic_long(b"")))
    )
    assert trace["hash"] == steering.flow_hash(
        packed("10.0.0.9"), packed(SRV4), 1000, 4433, 17, seed=SEED
    )
    # another port is plain UDP
    _, trace = run(dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(1000, 4434, kp.quic_short(dcid))))
    assert trace["hash"] == steering.flow_hash(
        packed("10.0.0.9"), packed(SRV4), 1000, 4434, 17, seed=SEED
    )


def test_quic_dcid_we_minted_goes_to_the_cpu_it_names(dp: Datapath) -> None:
    """A DCID with our marker (230) and a worker key (gateway/quic_cid.py) is redirected to
    the key's CPU when that CPU is live, whatever its hash says; a key naming a CPU that is
    not live, or no key at all, falls back to the DCID hash."""
    dp.set_quic({4433}, short_dcid_len=12)

    def cid(key: int) -> bytes:
        return bytes([230, key >> 8, key & 0xFF]) + bytes.fromhex("0a0b0c0d0e0f1011a1")

    for key, cpu in (
        (0, 0),
        (1, 1),
        (steering.worker_key(1, 1), 1),
        (steering.worker_key(0, 1), 0),
    ):
        for payload in (kp.quic_short(cid(key)), kp.quic_long(cid(key), first=0xE0)):
            for sport in (1000, 2001, 3002):
                verdict, trace = run(
                    dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(sport, 4433, payload))
                )
                assert (verdict, trace["cpu"]) == ("REDIRECT", cpu), (key, sport)
                assert trace["reason"] == kernel_reason("redirect_quic_owner")
    assert total(dp, "redirect_quic_owner") == 4 * 2 * 3
    assert total(dp, "redirect_quic") == 0
    for key in (5, 2 * steering.MAX_CPUS):  # CPU 5 is not live; a key out of range
        verdict, trace = run(
            dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(1000, 4433, kp.quic_short(cid(key))))
        )
        want = steering.cid_hash(cid(key), seed=SEED)
        assert (verdict, trace["hash"], trace["cpu"]) == (
            "REDIRECT",
            want,
            dp.plan.target_cpu(want),
        )
    assert total(dp, "redirect_quic") == 2
    # on a port that is not a QUIC port the same bytes are plain UDP
    _, trace = run(dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(1000, 4434, kp.quic_short(cid(1)))))
    assert trace["reason"] == kernel_reason("redirect_udp")


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no QUIC byte at all
        b"\xc0\x00\x00",  # long header cut before the DCID length
        b"\xc0\x00\x00\x00\x01\x15" + b"x" * 40,  # DCID length 21
        b"\xc0\x00\x00\x00\x01\x08abc",  # DCID cut short
        b"\x40abc",  # short header shorter than the configured DCID
    ],
)
def test_quic_malformed_passes(dp: Datapath, payload: bytes) -> None:
    dp.set_quic({4433}, short_dcid_len=8)
    assert run(dp, kp.v4_frame("10.0.0.9", SRV4, 17, kp.udp(1000, 4433, payload)))[0] == "PASS"
    assert total(dp, "pass_quic_malformed") == 1


def test_deny_list_v4_v6(dp: Datapath) -> None:
    dp.deny_add("10.9.0.0/16")
    dp.deny_add("fd00:bad::/32")
    denied4 = kp.v4_frame("10.9.3.4", SRV4, 6, kp.tcp(1, 80))
    denied6 = kp.v6_frame("fd00:bad:1::5", SRV6, 17, kp.udp(1, 53))
    icmp_denied = kp.v4_frame("10.9.3.4", SRV4, 1, b"\x08\x00" + b"\x00" * 6)
    assert [run(dp, f)[0] for f in (denied4, denied6, icmp_denied)] == ["DROP"] * 3
    assert run(dp, kp.v4_frame("10.8.3.4", SRV4, 6, kp.tcp(1, 80)))[0] == "REDIRECT"
    assert total(dp, "drop_denied") == 3
    assert dp.deny_del("10.9.0.0/16") is True
    assert dp.deny_del("10.9.0.0/16") is False
    assert run(dp, denied4)[0] == "REDIRECT"


def test_new_flow_rate_cap(dp: Datapath) -> None:
    dp.set_rate_cap(3)
    syn = kp.v4_frame("10.5.0.1", SRV4, 6, kp.tcp(1000, 80, flags=0x02))
    ack = kp.v4_frame("10.5.0.1", SRV4, 6, kp.tcp(1000, 80, flags=0x10))
    assert [run(dp, syn)[0] for _ in range(5)] == ["REDIRECT"] * 3 + ["DROP"] * 2
    assert run(dp, ack)[0] == "REDIRECT"  # established traffic is not capped
    assert run(dp, kp.v4_frame("10.5.0.2", SRV4, 6, kp.tcp(1000, 80)))[0] == "REDIRECT"
    dp.set_quic({4433}, short_dcid_len=8)
    initial = kp.v4_frame("10.5.0.1", SRV4, 17, kp.udp(1, 4433, kp.quic_long(b"\x01" * 8)))
    assert run(dp, initial)[0] == "DROP"  # a QUIC Initial is a new flow too
    assert total(dp, "drop_rate") == 3
    dp.set_rate_cap(0)
    assert run(dp, syn)[0] == "REDIRECT"


def test_new_flow_rate_cap_keys_ipv6_by_prefix(dp: Datapath) -> None:
    """Item 15: one host rotating through addresses of its /64 shares one cap; another /64
    (and, with prefix 128, another address) has its own."""

    def syn(src: str) -> bytes:
        return kp.v6_frame(src, SRV6, 6, kp.tcp(1000, 80, flags=0x02))

    dp.set_rate_cap(2)  # /64 by default
    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
    assert [run(dp, syn(a))[0] for a in same_64] == ["REDIRECT", "REDIRECT", "DROP"]
    assert run(dp, syn("2001:db8:1:3::1"))[0] == "REDIRECT"  # the neighbouring /64
    assert total(dp, "drop_rate") == 1
    dp.set_rate_cap(2, v6_prefix=128)  # per address: fresh addresses are not capped together
    assert [run(dp, syn(f"2001:db8:7:7::{i}"))[0] for i in range(1, 4)] == ["REDIRECT"] * 3
    dp.set_rate_cap(2, v6_prefix=48)  # a /48 spans many /64s
    wide = ["2001:db8:9:1::1", "2001:db8:9:2::1", "2001:db8:9:3::1"]
    assert [run(dp, syn(a))[0] for a in wide] == ["REDIRECT", "REDIRECT", "DROP"]
    assert dp.config()["new_flow_v6_prefix"] == 48


def test_no_workers_passes(dp: Datapath) -> None:
    dp.set_workers({})
    assert dp.config()["nslots"] == 0
    assert run(dp, kp.v4_frame("10.0.0.9", SRV4, 6, kp.tcp(1, 80)))[0] == "PASS"
    assert total(dp, "pass_no_slots") == 1
