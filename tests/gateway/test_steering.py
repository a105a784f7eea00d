"""Pure tests of gateway.steering: hashes, CID encoding, slot plans, map-operation order.

Kernel agreement of the hashes is tested in tests/kernel/test_xdp_testrun.py.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import steering as s

TCP443 = s.ListenerKey(443, s.IPPROTO_TCP, 4)
UDP443 = s.ListenerKey(443, s.IPPROTO_UDP, 4)


def test_fmix32_known_values() -> None:
    # MurmurHash3 fmix32 reference values (0 is a fixed point)
    assert s.fmix32(0) == 0
    assert s.fmix32(1) == 0x514E28B7
    assert s.fmix32(0xFFFFFFFF) == 0x81F16F39


def test_flow_hash_depends_on_every_field() -> None:
    base = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 1000, 80, s.IPPROTO_TCP)
    h = s.flow_hash(*base)
    assert s.flow_hash(b"\x0a\x00\x00\x03", *base[1:]) != h
    assert s.flow_hash(base[0], b"\x0a\x00\x00\x03", *base[2:]) != h
    assert s.flow_hash(*base[:2], 1001, *base[3:]) != h
    assert s.flow_hash(*base[:3], 81, base[4]) != h
    assert s.flow_hash(*base[:4], s.IPPROTO_UDP) != h
    assert s.flow_hash(*base, seed=1) != h


def test_fragment_hash_ignores_ports() -> None:
    a, b = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    first = s.flow_hash(a, b, 1000, 53, s.IPPROTO_UDP, fragment=True)
    assert first == s.flow_hash(a, b, 0, 0, s.IPPROTO_UDP)
    assert first != s.flow_hash(a, b, 1000, 53, s.IPPROTO_UDP)


def test_flow_hash_rejects_mixed_families() -> None:
    with pytest.raises(s.SteeringError):
        s.flow_hash(b"\x00" * 4, b"\x00" * 16, 1, 2, 6)


def test_flow_hash_spreads_over_slots() -> None:
    rng = random.Random(7)
    counts = Counter(
        s.flow_hash(rng.randbytes(4), b"\x0a\x00\x00\x02", rng.randrange(65536), 443, 6) % 2
        for _ in range(4000)
    )
    assert 1800 < counts[0] < 2200


def test_cid_hash_fnv_then_fmix() -> None:
    # FNV-1a("a") = 0xe40c292c; the DCID hash finalises it
    assert s.cid_hash(b"a") == s.fmix32(0xE40C292C)
    assert s.cid_hash(b"a", seed=5) != s.cid_hash(b"a")
    with pytest.raises(s.SteeringError):
        s.cid_hash(b"")
    with pytest.raises(s.SteeringError):
        s.cid_hash(b"x" * 21)


def test_quic_dcid_long_and_short_headers() -> None:
    dcid = bytes(range(8))
    long_hdr = b"\xc0" + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x00rest"
    assert s.quic_dcid(long_hdr, 4) == dcid
    short_hdr = b"\x40" + dcid + b"payload"
    assert s.quic_dcid(short_hdr, 8) == dcid
    assert s.quic_dcid(short_hdr, 4) == dcid[:4]
    assert s.quic_dcid(b"", 8) is None
    assert s.quic_dcid(b"\xc0\x00\x00", 8) is None  # truncated before the length byte
    assert s.quic_dcid(b"\xc0\x00\x00\x00\x01\x15" + b"x" * 30, 8) is None  # length 21
    assert s.quic_dcid(b"\xc0\x00\x00\x00\x01\x08abc", 8) is None  # DCID cut short


@given(st.integers(0, s.GROUP_SLOTS - 1), st.binary(min_size=0, max_size=17))
def test_cid_worker_key_round_trip(key: int, entropy: bytes) -> None:
    cid = s.encode_cid(key, entropy)
    assert s.decode_worker_key(cid) == key
    assert len(cid) == 3 + len(entropy)


def test_decode_worker_key_rejects_foreign_cids() -> None:
    assert s.decode_worker_key(b"\x00\x00\x01abcdef") is None  # no marker
    assert s.decode_worker_key(bytes([s.CID_MARKER, 1, 0])) is None  # key 256
    assert s.decode_worker_key(bytes([s.CID_MARKER, 0])) is None  # too short
    with pytest.raises(s.SteeringError):
        s.encode_cid(256, b"")
    with pytest.raises(s.SteeringError):
        s.encode_cid(1, b"x" * 18)


def test_worker_keys_of_two_generations_differ() -> None:
    assert s.worker_key(3, 0) == 3
    assert s.worker_key(3, 1) == 3 + s.MAX_CPUS
    assert s.worker_key(3, 2) == 3
    with pytest.raises(s.SteeringError):
        s.worker_key(s.MAX_CPUS)


def test_cpu_slots_equal_shares() -> None:
    slots = s.plan_cpu_slots([2, 0, 1], nslots=256)
    assert len(slots) == 256
    assert Counter(slots) == {0: 86, 1: 85, 2: 85}
    assert s.plan_cpu_slots([]) == ()


def test_cpu_slots_move_only_what_they_must() -> None:
    before = s.plan_cpu_slots([0, 1, 2, 3])
    after = s.plan_cpu_slots([0, 1, 3], previous=before)
    moved = [i for i in range(256) if before[i] != after[i]]
    assert all(before[i] == 2 for i in moved)  # only CPU 2's slots moved
    assert Counter(after) == {0: 86, 1: 85, 3: 85}
    grown = s.plan_cpu_slots([0, 1, 2, 3], previous=after)
    assert sum(a != g for a, g in zip(after, grown, strict=True)) == 64  # CPU 2's share back


@given(st.sets(st.integers(0, s.MAX_CPUS - 1), min_size=1, max_size=16), st.randoms())
def test_cpu_slots_only_live_cpus(live: set[int], rng: random.Random) -> None:
    prev = tuple(rng.choice(range(s.MAX_CPUS)) for _ in range(s.MAX_SLOTS))
    slots = s.plan_cpu_slots(live, previous=prev)
    assert set(slots) == live
    counts = Counter(slots).values()
    assert max(counts) - min(counts) <= 1


def test_plan_steering_groups_and_keys() -> None:
    plan = s.plan_steering(
        {0: {TCP443: 10, UDP443: 11}, 1: {TCP443: 12, UDP443: 13}},
        quic_short_dcid_len={UDP443: 8},
    )
    tcp, udp = plan.groups[TCP443], plan.groups[UDP443]
    assert {tcp.index, udp.index} == {0, 1}
    assert dict(tcp.sockets) == {0: 10, 1: 12} and dict(tcp.cpu_keys) == {0: 0, 1: 1}
    assert udp.quic and udp.flags == s.GROUP_QUIC and udp.quic_short_dcid_len == 8
    assert not tcp.quic
    assert plan.target_cpu(5) == plan.cpu_slots[5]
    assert s.SteeringPlan().target_cpu(5) is None


def test_plan_steering_reload_keeps_draining_quic_sockets() -> None:
    gen0 = s.plan_steering({0: {UDP443: 10}, 1: {UDP443: 11}}, quic_short_dcid_len={UDP443: 8})
    gen1 = s.plan_steering(
        {0: {UDP443: 20}, 1: {UDP443: 21}},
        quic_short_dcid_len={UDP443: 8},
        generation=1,
        draining={0: {UDP443: 10}, 1: {UDP443: 11}},
        previous=gen0,
    )
    g = gen1.groups[UDP443]
    assert g.index == gen0.groups[UDP443].index
    assert dict(g.sockets) == {0: 10, 1: 11, 128: 20, 129: 21}
    assert dict(g.cpu_keys) == {0: 128, 1: 129}  # new connections go to generation 1


def test_plan_changes_orders_additions_before_removals() -> None:
    old = s.plan_steering({0: {TCP443: 10}, 1: {TCP443: 11}})
    new = s.plan_steering({1: {TCP443: 11}, 2: {UDP443: 30}}, previous=old)
    ops = s.plan_changes(old, new)
    kinds = [op.kind for op in ops]
    first_removal = min(i for i, k in enumerate(kinds) if k.endswith(("_del", "_clear")))
    assert all(not k.endswith(("_del", "_clear")) for k in kinds[:first_removal])
    assert all(k.endswith(("_del", "_clear")) for k in kinds[first_removal:])
    assert s.MapOp("cpumap_add", 2) in ops and s.MapOp("cpumap_del", 0) in ops
    assert kinds.index("cpumap_add") < kinds.index("slots_set")
    tcp = new.groups[TCP443]
    assert s.MapOp("socket_del", tcp.socket_index(0)) in ops
    assert s.MapOp("cpu_key_clear", tcp.cpu_key_index(0)) in ops
    # CPU 1's unchanged socket is not rewritten
    assert s.MapOp("socket_set", tcp.socket_index(1), 11) not in ops
    assert s.plan_changes(new, new) == []


def test_removed_group_index_not_reused_in_same_step() -> None:
    old = s.plan_steering({0: {TCP443: 10}})
    new = s.plan_steering({0: {UDP443: 11}}, previous=old)
    assert new.groups[UDP443].index != old.groups[TCP443].index
    ops = s.plan_changes(old, new)
    assert ops[-1] == s.MapOp("group_del", TCP443)


def test_too_many_groups() -> None:
    workers = {0: {s.ListenerKey(p, s.IPPROTO_TCP, 4): p for p in range(1, s.MAX_GROUPS + 2)}}
    with pytest.raises(s.SteeringError):
        s.plan_steering(workers)
