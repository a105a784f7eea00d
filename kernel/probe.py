"""Feature probe: what of the kernel datapath this machine can run, and the fallback for
each missing piece.

Owns: the checks (libbpf present and >= 1.0, BPF permitted, bpffs mountable, cpumap and
REUSEPORT_SOCKARRAY map types, sk_reuseport programs, native XDP per interface, our
compiled objects) and the `Features` record the supervisor logs and acts on.
Must never: leave anything behind (a probe attach is detached, nothing is pinned).
"""

from __future__ import annotations

import errno
import os
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kernel import bpffs
from kernel.libbpf import (
    BPF_MAP_TYPE_CPUMAP,
    BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
    BPF_PROG_TYPE_SK_REUSEPORT,
    BPF_PROG_TYPE_XDP,
    BPF_XDP,
    XDP_ATTACHED_DRV,
    XDP_ATTACHED_NONE,
    XDP_FLAGS_DRV_MODE,
    BpfError,
    LibbpfUnavailable,
    ffi,
    lib,
    version,
)

OBJECTS = ("xdp_steer.bpf.o", "reuseport_select.bpf.o")


@dataclass(frozen=True)
class Features:
    libbpf_version: tuple[int, int] | None
    bpf_permitted: bool
    bpffs: bool
    cpumap: bool
    sk_reuseport: bool
    objects: bool
    incoming_cpu_hint: bool  # kernel >= 6.2 honours SO_INCOMING_CPU in reuseport groups
    native_xdp: dict[str, bool] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)  # missing piece -> what we do

    @property
    def xdp_steering(self) -> bool:
        return self.bpf_permitted and self.cpumap and self.objects

    def xdp_mode(self, ifname: str) -> str:
        return "native" if self.native_xdp.get(ifname) else "generic"


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = platform.release().split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _native_xdp(ifname: str) -> bool:
    """Is driver-mode XDP possible on ifname?

    A program already attached answers it (driver mode: yes; generic: assume not, we
    will not disturb it). Otherwise a trivial XDP_PASS program is attached in driver
    mode through a bpf_link and detached at once: probe only interfaces the gateway is
    configured to steer.
    """
    query = ffi.new("struct bpf_xdp_query_opts *")
    query.sz = ffi.sizeof("struct bpf_xdp_query_opts")
    ifindex = socket.if_nametoindex(ifname)
    if lib.bpf_xdp_query(ifindex, 0, query) == 0 and query.attach_mode != XDP_ATTACHED_NONE:
        return bool(query.attach_mode == XDP_ATTACHED_DRV)
    insns = b"\xb7\x00\x00\x00\x02\x00\x00\x00" + b"\x95" + b"\x00" * 7  # r0 = 2; exit
    fd = _load_trivial_xdp(insns)
    try:
        opts = ffi.new("struct bpf_link_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_create_opts")
        opts.flags = XDP_FLAGS_DRV_MODE
        link = lib.bpf_link_create(fd, ifindex, BPF_XDP, opts)
        if link < 0:
            return False
        os.close(link)
        return True
    finally:
        os.close(fd)


def _load_trivial_xdp(insns: bytes) -> int:
    fd = lib.bpf_prog_load(BPF_PROG_TYPE_XDP, b"gw_probe", b"GPL", insns, len(insns) // 8, ffi.NULL)
    if fd < 0:
        raise BpfError(-fd, "load probe program")
    return int(fd)


def probe(interfaces: tuple[str, ...] = (), obj_dir: Path | None = None) -> Features:
    """Probe once at start-up; never raises for a missing feature."""
    fallbacks: dict[str, str] = {}
    hint = _kernel_at_least(6, 2)
    objects = obj_dir is not None and all((obj_dir / o).exists() for o in OBJECTS)
    if obj_dir is not None and not objects:
        fallbacks["objects"] = "bpf objects missing (run python -m kernel.build): no XDP steering"
    try:
        ver: tuple[int, int] | None = version()
    except LibbpfUnavailable as exc:
        fallbacks["libbpf"] = f"{exc}: no BPF; workers use the SO_INCOMING_CPU hint"
        return Features(None, False, False, False, False, objects, hint, {}, fallbacks)
    permitted = lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, ffi.NULL) == 1
    cpumap = permitted and lib.libbpf_probe_bpf_map_type(BPF_MAP_TYPE_CPUMAP, ffi.NULL) == 1
    reuseport = permitted and (
        lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_REUSEPORT, ffi.NULL) == 1
        and lib.libbpf_probe_bpf_map_type(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, ffi.NULL) == 1
    )
    if not permitted:
        fallbacks["bpf"] = "BPF not permitted: no XDP, workers use the SO_INCOMING_CPU hint"
    elif not cpumap:
        fallbacks["cpumap"] = "no cpumap: no XDP steering; NIC RSS/RPS decides the CPU"
    if permitted and not reuseport:
        fallbacks["sk_reuseport"] = "no sk_reuseport program: SO_INCOMING_CPU hint"
    try:
        bpffs.ensure_mounted()
        has_bpffs = True
    except OSError as exc:
        has_bpffs = False
        fallbacks["bpffs"] = f"{exc}: run unpinned (no adoption by a new supervisor)"
    native: dict[str, bool] = {}
    for ifname in interfaces:
        try:
            native[ifname] = permitted and _native_xdp(ifname)
        except (BpfError, OSError) as exc:
            if exc.errno not in (errno.ENODEV, errno.EPERM, errno.EBUSY):
                raise
            native[ifname] = False
        if not native[ifname]:
            fallbacks[f"native_xdp:{ifname}"] = "generic (SKB) mode XDP"
    if not hint:
        fallbacks["incoming_cpu_hint"] = "kernel < 6.2: SO_INCOMING_CPU is no reuseport hint"
    return Features(ver, permitted, has_bpffs, cpumap, reuseport, objects, hint, native, fallbacks)
