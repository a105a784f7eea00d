"""The pure steering plan of the kernel datapath.

Owns: the flow hash and the QUIC DCID hash exactly as kernel/bpf/hash.h and parse.h compute
them, the worker-key-in-connection-ID encoding read by kernel/bpf/reuseport_select.bpf.c,
which CPU each XDP slot sends to, which reuseport socket slot each worker's socket gets,
and the ordered list of map operations that moves the kernel from one plan to the next
(additions before removals).
Must never: touch a socket, a file descriptor's kernel object, a map or the clock; file
descriptors are plain integers here. Limits mirror kernel/bpf/abi.h (a test checks them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_CPUS = 128
MAX_SLOTS = 256
MAX_GROUPS = 64
GROUP_SLOTS = 256
CID_MAX_BYTES = 20
CID_MARKER = 230
NO_KEY = 0xFFFFFFFF
GROUP_QUIC = 1

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV6_FRAGMENT = 44

_M32 = 0xFFFFFFFF
FNV_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193


class SteeringError(ValueError):
    """A steering request the datapath cannot represent (too many CPUs, groups, keys)."""


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def _mix(h: int, word: int) -> int:
    return fmix32(h ^ (word & _M32))


def flow_hash(
    saddr: bytes,
    daddr: bytes,
    sport: int,
    dport: int,
    proto: int,
    *,
    seed: int = 0,
    fragment: bool = False,
) -> int:
    """The XDP flow hash: addresses as big-endian 32-bit words, then ports, then protocol.

    Fragments (IPv4 MF/offset, IPv6 fragment header with proto 44) hash with ports 0.
    """
    if len(saddr) != len(daddr) or len(saddr) not in (4, 16):
        raise SteeringError("addresses must both be 4 or 16 bytes")
    h = seed & _M32
    for addr in (saddr, daddr):
        for i in range(0, len(addr), 4):
            h = _mix(h, int.from_bytes(addr[i : i + 4], "big"))
    if fragment:
        sport = dport = 0
    h = _mix(h, ((sport & 0xFFFF) << 16) | (dport & 0xFFFF))
    return _mix(h, proto & 0xFF)


def cid_hash(cid: bytes, *, seed: int = 0) -> int:
    """The XDP QUIC DCID hash (FNV-1a over the bytes, seeded, then fmix32)."""
    if not 0 < len(cid) <= CID_MAX_BYTES:
        raise SteeringError(f"DCID length {len(cid)} outside 1..{CID_MAX_BYTES}")
    h = FNV_BASIS ^ (seed & _M32)
    for b in cid:
        h = ((h ^ b) * FNV_PRIME) & _M32
    return fmix32(h)


def quic_dcid(payload: bytes, short_dcid_len: int) -> bytes | None:
    """The destination connection ID of a QUIC packet (UDP payload), None if malformed.

    Long header (RFC 9000 §17.2): flags, 4-byte version, DCID length, DCID. Short header
    (§17.3): flags then a DCID whose length only the server knows (`short_dcid_len`).
    """
    if not payload:
        return None
    if payload[0] & 0x80:
        if len(payload) < 6:
            return None
        length, start = payload[5], 6
    else:
        length, start = short_dcid_len, 1
    if length > CID_MAX_BYTES or len(payload) < start + length:
        return None
    return payload[start : start + length]


def encode_cid(worker_key: int, entropy: bytes) -> bytes:
    """A server connection ID naming worker_key: marker, key (16-bit big-endian), entropy."""
    if not 0 <= worker_key < GROUP_SLOTS:
        raise SteeringError(f"worker key {worker_key} outside 0..{GROUP_SLOTS - 1}")
    cid = bytes([CID_MARKER]) + worker_key.to_bytes(2, "big") + entropy
    if len(cid) > CID_MAX_BYTES:
        raise SteeringError("connection ID longer than 20 bytes")
    return cid


def decode_worker_key(cid: bytes) -> int | None:
    """The worker key the reuseport program reads from a DCID, or None."""
    if len(cid) < 3 or len(cid) > CID_MAX_BYTES or cid[0] != CID_MARKER:
        return None
    key = int.from_bytes(cid[1:3], "big")
    return key if key < GROUP_SLOTS else None


def worker_key(cpu: int, generation: int = 0) -> int:
    """The socket slot of the worker on `cpu` in `generation` (two generations coexist)."""
    if not 0 <= cpu < MAX_CPUS:
        raise SteeringError(f"cpu {cpu} outside 0..{MAX_CPUS - 1}")
    return (generation % 2) * MAX_CPUS + cpu


def shared_socket_key(cpu: int) -> int:
    """The sockarray key of a CPU's socket when every generation on that CPU reads the same
    socket (the supervisor's sockets, one per (listener, CPU)): the key its QUIC workers
    write into their connection IDs. One key per CPU, not one per generation parity: a
    REUSEPORT_SOCKARRAY holds a socket in one slot only (a second insert fails with EBUSY),
    and a connection ID minted before a reload must keep naming its CPU."""
    return worker_key(cpu, 0)


def plan_cpu_slots(
    live_cpus: Iterable[int], nslots: int = MAX_SLOTS, previous: tuple[int, ...] = ()
) -> tuple[int, ...]:
    """slot -> cpu over live_cpus with equal shares, moving as few slots as possible.

    Slots whose CPU is still live and under its share keep it; the rest go, in slot order,
    to the live CPUs below their share (lowest CPU first). Empty live set -> no slots.
    """
    cpus = sorted(set(live_cpus))
    if not cpus:
        return ()
    if any(not 0 <= c < MAX_CPUS for c in cpus) or not 0 < nslots <= MAX_SLOTS:
        raise SteeringError("cpu or slot count outside the datapath limits")
    share = {
        c: nslots // len(cpus) + (1 if i < nslots % len(cpus) else 0) for i, c in enumerate(cpus)
    }
    used = dict.fromkeys(cpus, 0)
    slots: list[int | None] = [None] * nslots
    if len(previous) == nslots:
        for i, c in enumerate(previous):
            if c in used and used[c] < share[c]:
                slots[i] = c
                used[c] += 1
    needy = iter([c for c in cpus for _ in range(share[c] - used[c])])
    return tuple(c if c is not None else next(needy) for c in slots)


@dataclass(frozen=True, order=True)
class ListenerKey:
    """A reuseport group as the kernel sees it: local port, IP protocol, family (4 or 6)."""

    port: int
    proto: int
    family: int


@dataclass(frozen=True)
class GroupPlan:
    index: int
    quic: bool
    quic_short_dcid_len: int
    sockets: Mapping[int, int]  # worker key -> socket fd
    cpu_keys: Mapping[int, int]  # cpu -> worker key of the CPU's current worker

    @property
    def flags(self) -> int:
        return GROUP_QUIC if self.quic else 0

    def socket_index(self, key: int) -> int:
        return self.index * GROUP_SLOTS + key

    def cpu_key_index(self, cpu: int) -> int:
        return self.index * MAX_CPUS + cpu


@dataclass(frozen=True)
class SteeringPlan:
    cpu_slots: tuple[int, ...] = ()
    groups: Mapping[ListenerKey, GroupPlan] = field(default_factory=dict)

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset(self.cpu_slots)

    def target_cpu(self, hash_value: int) -> int | None:
        """The CPU the XDP program redirects a packet with this hash to."""
        if not self.cpu_slots:
            return None
        return self.cpu_slots[hash_value % len(self.cpu_slots)]


def plan_steering(
    workers: Mapping[int, Mapping[ListenerKey, int]],
    *,
    quic_short_dcid_len: Mapping[ListenerKey, int] | None = None,
    generation: int = 0,
    draining: Mapping[int, Mapping[ListenerKey, int]] | None = None,
    previous: SteeringPlan | None = None,
) -> SteeringPlan:
    """The plan for live workers {cpu: {listener: socket fd}} of `generation`.

    `quic_short_dcid_len` names the UDP listeners that speak QUIC (and their short-header
    DCID length). `draining` holds the previous generation's sockets: they stay reachable
    through connection IDs naming their worker key, but get no new connections. Group
    indices and the slot table stay as stable as `previous` allows.
    """
    quic = dict(quic_short_dcid_len or {})
    prev = previous or SteeringPlan()
    slots = plan_cpu_slots(workers, previous=prev.cpu_slots)
    listeners = sorted({lk for socks in workers.values() for lk in socks})
    # an index freed by this plan is not reused by it: its removals run after the additions
    free = iter(sorted(set(range(MAX_GROUPS)) - {g.index for g in prev.groups.values()}))
    groups: dict[ListenerKey, GroupPlan] = {}
    for lk in listeners:
        old = prev.groups.get(lk)
        index = old.index if old else next(free, None)
        if index is None:
            raise SteeringError(f"more than {MAX_GROUPS} reuseport groups")
        sockets: dict[int, int] = {}
        cpu_keys: dict[int, int] = {}
        for cpu, socks in sorted(workers.items()):
            if lk in socks:
                key = worker_key(cpu, generation)
                sockets[key] = socks[lk]
                cpu_keys[cpu] = key
        for cpu, socks in sorted((draining or {}).items()):
            if lk in socks:
                sockets.setdefault(worker_key(cpu, generation - 1), socks[lk])
        groups[lk] = GroupPlan(index, lk in quic, quic.get(lk, 0), sockets, cpu_keys)
    return SteeringPlan(slots, groups)


# Map operations, in the order the reconciler must apply them.
@dataclass(frozen=True)
class MapOp:
    kind: str  # see OP_ORDER
    key: int | ListenerKey
    value: int | tuple[int, ...] | GroupPlan | None = None


OP_ORDER = (
    "cpumap_add",  # key cpu
    "slots_set",  # key nslots, value the slot table
    "group_set",  # key ListenerKey, value GroupPlan
    "socket_set",  # key sockarray index, value fd
    "cpu_key_set",  # key cpu-key index, value worker key
    "cpu_key_clear",  # key cpu-key index
    "socket_del",  # key sockarray index
    "group_del",  # key ListenerKey
    "cpumap_del",  # key cpu
)


def plan_changes(old: SteeringPlan, new: SteeringPlan) -> list[MapOp]:
    """Ordered map operations from old to new: everything added before anything removed."""
    ops: list[MapOp] = [MapOp("cpumap_add", c) for c in sorted(new.cpus - old.cpus)]
    if new.cpu_slots != old.cpu_slots:
        ops.append(MapOp("slots_set", len(new.cpu_slots), new.cpu_slots))
    removals: list[MapOp] = []
    for lk, g in sorted(new.groups.items()):
        og = old.groups.get(lk)
        if og != g:
            ops.append(MapOp("group_set", lk, g))
        same = og is not None and og.index == g.index
        had_socks = og.sockets if og is not None and same else {}
        had_keys = og.cpu_keys if og is not None and same else {}
        ops += [
            MapOp("socket_set", g.socket_index(k), fd)
            for k, fd in sorted(g.sockets.items())
            if had_socks.get(k) != fd
        ]
        ops += [
            MapOp("cpu_key_set", g.cpu_key_index(c), k)
            for c, k in sorted(g.cpu_keys.items())
            if had_keys.get(c) != k
        ]
        if og and same:
            removals += [
                MapOp("cpu_key_clear", g.cpu_key_index(c))
                for c in sorted(set(og.cpu_keys) - set(g.cpu_keys))
            ]
            removals += [
                MapOp("socket_del", g.socket_index(k))
                for k in sorted(set(og.sockets) - set(g.sockets))
            ]
    for lk, og in sorted(old.groups.items()):
        if lk not in new.groups:
            removals += [MapOp("cpu_key_clear", og.cpu_key_index(c)) for c in sorted(og.cpu_keys)]
            removals += [MapOp("socket_del", og.socket_index(k)) for k in sorted(og.sockets)]
            removals.append(MapOp("group_del", lk))
    removals += [MapOp("cpumap_del", c) for c in sorted(old.cpus - new.cpus)]
    order = {kind: i for i, kind in enumerate(OP_ORDER)}
    return ops + sorted(removals, key=lambda op: order[op.kind])
