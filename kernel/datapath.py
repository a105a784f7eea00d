"""The kernel datapath's lifecycle: create / open-pinned / upgrade / unload, attach, steer.

Owns: loading xdp_steer.bpf.o and reuseport_select.bpf.o against maps pinned under
/sys/fs/bpf/expressgateway/<instance>/maps/, XDP attachment through a pinned bpf_link
(links/<ifname>) so a new supervisor adopts it, atomic program replacement with
bpf_link_update (never detach + attach, notes P8), and the public operations the
supervisor calls (workers, deny list, rate cap, QUIC ports, counters).
Must never: decide steering (gateway.steering plans, kernel.reconcile applies) or compile C.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

from gateway.steering import ListenerKey, SteeringPlan, plan_steering
from kernel import bpffs
from kernel.libbpf import (
    BPF_XDP,
    XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_SKB_MODE,
    BpfError,
    check,
    ffi,
    lib,
    log_mark,
    log_since,
)
from kernel.maps import ABI_CONSTANTS, MapView, abi
from kernel.objects import BpfObject
from kernel.reconcile import CONFIG_FIELDS, SteeringMaps, apply_plan, observed_plan

XDP_OBJECT = "xdp_steer.bpf.o"
REUSEPORT_OBJECT = "reuseport_select.bpf.o"
SO_ATTACH_REUSEPORT_EBPF = 52

# map name -> (key type, value type, per-CPU) as abi.h spells them
XDP_MAPS = {
    "gw_config": ("__u32", "struct gw_xdp_config", False),
    "gw_cpu_slots": ("__u32", "__u32", False),
    "gw_cpu_map": ("__u32", "struct gw_cpumap_value", False),
    "gw_quic_ports": ("struct gw_port_key", "__u32", False),
    "gw_deny_v4": ("struct gw_lpm_v4", "__u32", False),
    "gw_deny_v6": ("struct gw_lpm_v6", "__u32", False),
    "gw_rate": ("struct gw_rate_key", "struct gw_rate_state", False),
    "gw_stats": ("__u32", "__u64", True),
    "gw_trace": ("__u32", "struct gw_trace", True),
}
REUSEPORT_MAPS = {
    "gw_rp_socks": ("__u32", "__u64", False),
    "gw_rp_groups": ("struct gw_rp_group_key", "struct gw_rp_group", False),
    "gw_rp_cpu_keys": ("__u32", "__u32", False),
    "gw_rp_stats": ("__u32", "__u64", True),
}
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


def _reason_names(enum_name: str, count_name: str) -> list[str]:
    elements = abi.typeof(enum_name).elements
    return [elements[i].lower() for i in sorted(elements) if elements[i] != count_name]


XDP_REASONS = [
    n.removeprefix("gw_xdp_") for n in _reason_names("enum gw_xdp_reason", "GW_XDP_REASONS")
]
RP_REASONS = [n.removeprefix("gw_rp_") for n in _reason_names("enum gw_rp_reason", "GW_RP_REASONS")]


class Datapath:
    """One instance of the datapath: its programs, its pinned maps and its XDP links."""

    def __init__(self, instance: str, pin_dir: Path, xdp: BpfObject, rp: BpfObject, created: bool):
        self.instance, self.pin_dir = instance, pin_dir
        self.created = created  # False: the maps were adopted from an earlier generation
        self._xdp, self._rp = xdp, rp
        self.maps: dict[str, MapView] = {}
        for obj, table in ((xdp, XDP_MAPS), (rp, REUSEPORT_MAPS)):
            for name, (kt, vt, percpu) in table.items():
                _, ksize, vsize, _ = obj.map_shape(name)
                self.maps[name] = MapView(
                    name, obj.map_fd(name), kt, vt, percpu=percpu
                ).check_shape(ksize, vsize)
        self.steering = SteeringMaps(
            config=self.maps["gw_config"],
            cpu_slots=self.maps["gw_cpu_slots"],
            cpu_map=self.maps["gw_cpu_map"],
            rp_groups=self.maps["gw_rp_groups"],
            rp_socks=self.maps["gw_rp_socks"],
            rp_cpu_keys=self.maps["gw_rp_cpu_keys"],
        )
        self.plan = SteeringPlan() if created else observed_plan(self.steering)
        self.xdp_prog_fd = xdp.program_fd("xdp_steer")
        self.reuseport_prog_fd = rp.program_fd("reuseport_select")
        self._links: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        instance: str,
        obj_dir: Path,
        *,
        pin_root: Path = bpffs.PIN_ROOT,
        hash_seed: int | None = None,
        trace: bool = False,
    ) -> Datapath:
        """Load both programs; create the instance's pinned maps or adopt existing ones.

        hash_seed applies only when the maps are created (default: random); adopted maps
        keep theirs so flows stay on their CPUs across supervisor generations.
        """
        if pin_root.is_relative_to(bpffs.BPFFS):
            bpffs.ensure_mounted(bpffs.BPFFS)
        pin_dir = bpffs.instance_dir(instance, pin_root)
        # a new ABI version gets fresh maps beside the old ones (shapes may differ)
        maps_dir = pin_dir / f"maps-v{ABI_CONSTANTS['GW_ABI_VERSION']}"
        bpffs.make_pin_dirs(maps_dir, pin_dir / "links")  # UnsafePinDir: adopt nothing
        created = not (maps_dir / "gw_config").exists()
        objs: list[BpfObject] = []
        try:
            for name, table in ((XDP_OBJECT, XDP_MAPS), (REUSEPORT_OBJECT, REUSEPORT_MAPS)):
                obj = BpfObject(Path(obj_dir) / name)
                objs.append(obj)
                obj.set_pin_dir(maps_dir, list(table))
                if trace and name == XDP_OBJECT:
                    obj.set_rodata_u32(0, 1)
                obj.load()
            dp = cls(instance, pin_dir, objs[0], objs[1], created)
        except BaseException:
            for obj in objs:
                obj.close()
            raise
        if created:
            seed = secrets.randbits(32) if hash_seed is None else hash_seed
            dp.maps["gw_config"].update(0, {"hash_seed": seed})
        return dp

    def close(self, unload: bool = False) -> None:
        """Release our fds. unload=True also detaches every link and removes the pins."""
        if unload:
            for ifname in list(self._links) + [p.name for p in (self.pin_dir / "links").glob("*")]:
                self.detach(ifname)
        for fd in self._links.values():
            os.close(fd)
        self._links.clear()
        self._xdp.close()
        self._rp.close()
        if unload:
            for d in [*self.pin_dir.glob("maps-v*"), self.pin_dir / "links"]:
                if d.exists():
                    for p in d.iterdir():
                        p.unlink()
                    d.rmdir()
            if self.pin_dir.exists():
                self.pin_dir.rmdir()

    # -- XDP attachment ------------------------------------------------------------------

    def pinned_links(self) -> list[str]:
        """Interfaces with a pinned XDP link (ours, or a crashed predecessor's)."""
        return sorted(p.name for p in (self.pin_dir / "links").glob("*"))

    def _link_pin(self, ifname: str) -> Path:
        return self.pin_dir / "links" / ifname

    def attach(self, ifname: str, mode: str = "auto") -> str:
        """Steer ifname's traffic with this generation's program; returns how it is attached.

        An existing pinned link (an earlier generation's) is adopted and its program replaced
        atomically -> "replaced". Otherwise a link is created in native or generic mode
        ("auto": native, then generic when the driver refuses) and pinned.
        """
        pin = self._link_pin(ifname)
        if ifname in self._links or pin.exists():
            self.replace_program(ifname)
            return "replaced"
        ifindex = socket.if_nametoindex(ifname)
        tries = ["native", "generic"] if mode == "auto" else [mode]
        last: BpfError | None = None
        for m in tries:
            opts = ffi.new("struct bpf_link_create_opts *")
            opts.sz = ffi.sizeof("struct bpf_link_create_opts")
            opts.flags = MODES[m]
            mark = log_mark()
            ret = lib.bpf_link_create(self.xdp_prog_fd, ifindex, BPF_XDP, opts)
            if ret >= 0:
                check(lib.bpf_obj_pin(ret, str(pin).encode()), f"pin link {pin}")
                self._links[ifname] = ret
                return m
            last = BpfError(-ret, f"xdp link {ifname} {m}", log_since(mark))
            if -ret not in (errno.EOPNOTSUPP, errno.EINVAL):
                break
        assert last is not None
        raise last

    def _link_fd(self, ifname: str) -> int:
        if ifname not in self._links:
            fd = check(lib.bpf_obj_get(str(self._link_pin(ifname)).encode()), f"open link {ifname}")
            self._links[ifname] = fd
        return self._links[ifname]

    def replace_program(self, ifname: str) -> None:
        """bpf_link_update the (pinned) link on ifname to this generation's program."""
        fd = self._link_fd(ifname)
        check(lib.bpf_link_update(fd, self.xdp_prog_fd, ffi.NULL), f"link update {ifname}")

    def detach(self, ifname: str) -> None:
        """Remove ifname's link pin and close our fd: the kernel detaches the program."""
        pin = self._link_pin(ifname)
        if pin.exists():
            pin.unlink()
        fd = self._links.pop(ifname, None)
        if fd is not None:
            os.close(fd)

    # -- steering ------------------------------------------------------------------------

    def set_workers(
        self,
        workers: Mapping[int, Mapping[ListenerKey, int]],
        *,
        quic_short_dcid_len: Mapping[ListenerKey, int] | None = None,
        generation: int = 0,
        draining: Mapping[int, Mapping[ListenerKey, int]] | None = None,
    ) -> SteeringPlan:
        """Steer to live workers {cpu: {listener key: socket fd}}; returns the plan applied."""
        new = plan_steering(
            workers,
            quic_short_dcid_len=quic_short_dcid_len,
            generation=generation,
            draining=draining,
            previous=self.plan,
        )
        apply_plan(self.steering, self.plan, new)
        self.plan = new
        return new

    def attach_reuseport(self, sock: socket.socket) -> None:
        """Attach reuseport_select to sock's SO_REUSEPORT group (call on its first socket,
        before the group's other sockets are bound, or on any member afterwards)."""
        sock.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, struct.pack("i", self.reuseport_prog_fd)
        )

    def _update_config(self, **fields: int) -> None:
        cfg = self.maps["gw_config"].lookup(0)
        current = {n: int(getattr(cfg, n)) for n in CONFIG_FIELDS}
        self.maps["gw_config"].update(0, {**current, **fields})

    def config(self) -> dict[str, int]:
        cfg = self.maps["gw_config"].lookup(0)
        return {n: int(getattr(cfg, n)) for n in CONFIG_FIELDS}

    def set_rate_cap(self, new_flows_per_s: int, v6_prefix: int = 64) -> None:
        """Per-source cap of new flows (TCP SYN, QUIC Initial) per second; 0 turns it off.
        IPv6 sources are counted per `v6_prefix` network (128: per address)."""
        if not 1 <= v6_prefix <= 128:
            raise ValueError("v6_prefix must be 1..128")
        self._update_config(new_flows_per_s=new_flows_per_s, new_flow_v6_prefix=v6_prefix)

    def set_quic(self, ports: set[int], short_dcid_len: int) -> None:
        """UDP ports whose DCID steers the flow, and the server's short-header DCID length."""
        if not 0 <= short_dcid_len <= 20:
            raise ValueError("short_dcid_len must be 0..20")
        view = self.maps["gw_quic_ports"]
        for port in ports:
            view.update({"port": port}, 1)
        for key in list(view.iter_keys()):
            if int(key.port) not in ports:
                view.delete(key)
        self._update_config(quic_short_dcid_len=short_dcid_len)

    def quic_ports(self) -> list[int]:
        """The UDP ports in gw_quic_ports (XDP hashes their DCID)."""
        return sorted(int(k.port) for k in self.maps["gw_quic_ports"].iter_keys())

    def reuseport_groups(self) -> list[dict[str, int]]:
        """gw_rp_groups as the reuseport program reads it: one entry per group."""
        view = self.maps["gw_rp_groups"]
        found = []
        for k in view.iter_keys():
            g = view.lookup(k)
            if g is not None:
                found.append(
                    {
                        "port": int(k.port),
                        "proto": int(k.proto),
                        "family": int(k.family),
                        "flags": int(g.flags),
                        "quic_short_dcid_len": int(g.quic_short_dcid_len),
                    }
                )
        return sorted(found, key=lambda g: (g["port"], g["proto"], g["family"]))

    @staticmethod
    def _lpm(cidr: str) -> tuple[str, dict[str, object]]:
        net = ipaddress.ip_network(cidr, strict=False)
        name = "gw_deny_v4" if net.version == 4 else "gw_deny_v6"
        return name, {"prefixlen": net.prefixlen, "addr": list(net.network_address.packed)}

    def deny_add(self, cidr: str) -> None:
        name, key = self._lpm(cidr)
        self.maps[name].update(key, 1)

    def deny_del(self, cidr: str) -> bool:
        name, key = self._lpm(cidr)
        return self.maps[name].delete(key)

    def stats(self) -> dict[str, list[int]]:
        """XDP verdict counters: reason -> count per possible CPU."""
        return self._counters("gw_stats", XDP_REASONS)

    def reuseport_stats(self) -> dict[str, list[int]]:
        return self._counters("gw_rp_stats", RP_REASONS)

    def _counters(self, name: str, reasons: list[str]) -> dict[str, list[int]]:
        view = self.maps[name]
        return {r: [int(v) for v in view.lookup(i) or []] for i, r in enumerate(reasons)}

    def last_trace(self) -> list[dict[str, int]]:
        """Per-CPU last decision (opened with trace=True): hash, cpu, reason, slot."""
        return [
            {f: int(getattr(t, f)) for f in ("hash", "cpu", "reason", "slot")}
            for t in self.maps["gw_trace"].lookup(0) or []
        ]
