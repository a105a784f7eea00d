"""Apply the pure steering plan (gateway/steering.py) to the datapath's maps.

Owns: turning `plan_changes` operations into map writes, in the order given (additions
before removals), and reading back what the maps hold after a supervisor restart.
Must never: decide which CPU or socket gets what; that is gateway.steering.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.steering import (
    MAX_CPUS,
    NO_KEY,
    GroupPlan,
    ListenerKey,
    MapOp,
    SteeringPlan,
    plan_changes,
)
from kernel.maps import MapView

CPUMAP_QSIZE = 2048
# struct gw_xdp_config, every field but the padding: rewritten whole on each change
CONFIG_FIELDS = (
    "nslots",
    "hash_seed",
    "quic_short_dcid_len",
    "new_flows_per_s",
    "new_flow_v6_prefix",
)


@dataclass
class SteeringMaps:
    """The map views the reconciler writes (XDP side and reuseport side)."""

    config: MapView  # gw_config: struct gw_xdp_config
    cpu_slots: MapView  # gw_cpu_slots: __u32 -> __u32
    cpu_map: MapView  # gw_cpu_map: __u32 -> struct gw_cpumap_value
    rp_groups: MapView  # gw_rp_groups
    rp_socks: MapView  # gw_rp_socks: __u32 -> __u64 (fd in, cookie out)
    rp_cpu_keys: MapView  # gw_rp_cpu_keys: __u32 -> __u32


def _apply(maps: SteeringMaps, op: MapOp) -> None:
    kind, key, value = op.kind, op.key, op.value
    if kind == "cpumap_add":
        maps.cpu_map.update(key, {"qsize": CPUMAP_QSIZE, "prog_fd": 0})
    elif kind == "slots_set":
        assert isinstance(value, tuple)
        for slot, cpu in enumerate(value):
            maps.cpu_slots.update(slot, cpu)
        cfg = maps.config.lookup(0)
        maps.config.update(0, {**_struct_dict(cfg), "nslots": len(value)})
    elif kind == "group_set":
        assert isinstance(key, ListenerKey) and isinstance(value, GroupPlan)
        rp_key = {"port": key.port, "proto": key.proto, "family": key.family}
        rp_value = {
            "index": value.index,
            "flags": value.flags,
            "quic_short_dcid_len": value.quic_short_dcid_len,
        }
        # a new group starts with every CPU unassigned (array maps start zeroed = key 0)
        for cpu in range(MAX_CPUS):
            if cpu not in value.cpu_keys:
                maps.rp_cpu_keys.update(value.cpu_key_index(cpu), NO_KEY)
        maps.rp_groups.update(rp_key, rp_value)
    elif kind == "socket_set":
        maps.rp_socks.update(key, value)
    elif kind == "cpu_key_set":
        maps.rp_cpu_keys.update(key, value)
    elif kind == "cpu_key_clear":
        maps.rp_cpu_keys.update(key, NO_KEY)
    elif kind == "socket_del":
        maps.rp_socks.delete(key)
    elif kind == "group_del":
        assert isinstance(key, ListenerKey)
        maps.rp_groups.delete({"port": key.port, "proto": key.proto, "family": key.family})
    elif kind == "cpumap_del":
        maps.cpu_map.delete(key)
    else:
        raise ValueError(f"unknown map operation {kind!r}")


def _struct_dict(value: object) -> dict[str, int]:
    return {name: int(getattr(value, name)) for name in CONFIG_FIELDS}


def apply_plan(maps: SteeringMaps, old: SteeringPlan, new: SteeringPlan) -> list[MapOp]:
    """Move the maps from `old` to `new`; returns the operations performed."""
    ops = plan_changes(old, new)
    for op in ops:
        if op.kind == "slots_set" and not new.cpu_slots:
            continue  # nslots 0 is written below, after the redirects are gone
        _apply(maps, op)
    if not new.cpu_slots and old.cpu_slots:
        cfg = maps.config.lookup(0)
        maps.config.update(0, {**_struct_dict(cfg), "nslots": 0})
    return ops


def observed_plan(maps: SteeringMaps) -> SteeringPlan:
    """What the maps hold, for the first reconcile after adopting pinned maps.

    Socket fds cannot be read back (the kernel returns cookies), so groups come back with
    every slot marked by fd -1: the next plan rewrites the sockets it wants and deletes
    the rest.
    """
    cfg = maps.config.lookup(0)
    nslots = int(cfg.nslots) if cfg is not None else 0
    slots = tuple(int(maps.cpu_slots.lookup(i) or 0) for i in range(nslots))
    groups: dict[ListenerKey, GroupPlan] = {}
    for k in maps.rp_groups.iter_keys():
        g = maps.rp_groups.lookup(k)
        if g is None:
            continue
        plan = GroupPlan(int(g.index), bool(g.flags & 1), int(g.quic_short_dcid_len), {}, {})
        cpu_keys = {}
        for cpu in range(MAX_CPUS):
            wk = maps.rp_cpu_keys.lookup(plan.cpu_key_index(cpu))
            if wk is not None and int(wk) != NO_KEY:
                cpu_keys[cpu] = int(wk)
        sockets = {}
        for wk in range(256):
            if maps.rp_socks.lookup(plan.socket_index(wk)) is not None:
                sockets[wk] = -1
        groups[ListenerKey(int(k.port), int(k.proto), int(k.family))] = GroupPlan(
            plan.index, plan.quic, plan.quic_short_dcid_len, sockets, cpu_keys
        )
    return SteeringPlan(slots, groups)
