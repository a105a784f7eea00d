"""The supervisor's side of the kernel datapath (`[kernel]`): start, steer, answer, stop.

Owns: the start-up feature probe and its `kernel_fallback` events, the `[kernel] required`
verdict (DatapathUnavailable -> exit 69), attaching the reuseport program to each new
SO_REUSEPORT group, turning the supervisor's socket table and live CPUs into
`Datapath.set_workers`, XDP attachment to `[kernel] interfaces`, the deny list and the
per-source new-flow cap, `gatewayctl kernel ...` answers, and feeding the per-CPU verdict
counters into the supervisor metrics.
Must never: create, bind or close sockets (supervisor/sockets.py does), decide steering
(gateway.steering plans it), or raise out of a steering update at run time (a failed map
write is logged; the sockets still carry traffic through the kernel's hash).

Stop policy: a plain stop unloads everything (links, programs, pins), so nothing stays
attached. A supervisor that dies without stopping (SIGKILL, crash) leaves its pinned maps
and XDP links in place; the next supervisor with the same `[kernel] instance` adopts them
(same hash seed, same counters, program swapped with bpf_link_update).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog
import trio

from gateway.config.plan import SocketKey
from gateway.config.schema import KernelConfig
from gateway.control import Response
from gateway.errors import DatapathUnavailable
from gateway.metrics.supervisor_metrics import SupervisorMetrics
from gateway.quic_cid import SHORT_DCID_LEN_BYTES
from gateway.steering import ListenerKey, SteeringError
from kernel.datapath import Datapath
from kernel.libbpf import BpfError
from kernel.probe import Features, probe
from kernel.socket_steering import listener_key

log = structlog.get_logger("expressgateway.kernel")

OBJ_DIR_ENV = "EXPRESSGATEWAY_BPF_DIR"
DEFAULT_OBJ_DIR = Path(__file__).resolve().parent.parent / "build" / "bpf"
METRICS_INTERVAL_S = 2.0
USAGE = "usage: gatewayctl kernel stats | deny list | deny add CIDR | deny del CIDR"


def obj_dir_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """Where the compiled BPF objects are (`python -m kernel.build --out build/bpf`)."""
    return Path(env.get(OBJ_DIR_ENV) or DEFAULT_OBJ_DIR)


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def missing_pieces(cfg: KernelConfig, features: Features, absent: list[str]) -> dict[str, str]:
    """Every missing piece -> its fallback: the probe's, plus absent interfaces and native
    XDP when `[kernel] mode = "native"` was asked for."""
    missing = dict(features.fallbacks)
    for ifname in absent:
        missing[f"interface:{ifname}"] = f"interface {ifname!r} does not exist: no XDP on it"
    if cfg.mode == "generic":  # generic mode never wanted native XDP: nothing falls back
        missing = {k: v for k, v in missing.items() if not k.startswith("native_xdp:")}
    return missing


def needed(piece: str, cfg: KernelConfig) -> bool:
    """Does `[kernel] required = true` fail on this missing piece?"""
    if piece.startswith("native_xdp:"):
        return cfg.mode == "native"
    return piece != "incoming_cpu_hint"  # only matters without BPF


def start_datapath(cfg: KernelConfig, *, obj_dir: Path | None = None) -> DatapathControl | None:
    """Probe, log one `kernel_fallback` per missing piece, and open the datapath.

    Returns None when the datapath cannot run (the SO_INCOMING_CPU hint stays the
    steering); raises DatapathUnavailable when `[kernel] required` and a needed piece is
    missing, before anything is attached.
    """
    if not cfg.enabled:
        return None
    obj_dir = obj_dir or obj_dir_from_env()
    present = [i for i in cfg.interfaces if _interface_exists(i)]
    absent = [i for i in cfg.interfaces if i not in present]
    features = probe(tuple(present), obj_dir)
    missing = missing_pieces(cfg, features, absent)
    for piece, fallback in sorted(missing.items()):
        log.warning("kernel_fallback", piece=piece, fallback=fallback)
    fatal = sorted(p for p in missing if needed(p, cfg))
    if cfg.required and fatal:
        raise DatapathUnavailable(
            "[kernel] required = true but the kernel datapath cannot run: "
            + "; ".join(f"{p}: {missing[p]}" for p in fatal)
        )
    usable = features.xdp_steering and features.sk_reuseport and features.bpffs
    if not usable:
        log.warning("kernel_datapath_off", fallback="SO_INCOMING_CPU hint per worker socket")
        return None
    try:
        dp = Datapath.open(cfg.instance, obj_dir)
    except (BpfError, OSError, ValueError) as exc:
        if cfg.required:
            raise DatapathUnavailable(f"[kernel] required = true: datapath open: {exc}") from exc
        log.error("kernel_open_failed", error=str(exc), fallback="SO_INCOMING_CPU hint")
        return None
    log.info(
        "kernel_datapath_opened",
        instance=cfg.instance,
        adopted=not dp.created,
        obj_dir=str(obj_dir),
        hash_seed=dp.config()["hash_seed"],
    )
    control = DatapathControl(dp, cfg, features, absent)
    control.detach_stale_links()
    return control


class DatapathApplyFailed(DatapathUnavailable):
    """The kernel refused part of a config (a map write, an attach): the OS error,
    translated once here."""


class DatapathControl:
    """A running datapath as the supervisor sees it."""

    def __init__(
        self, dp: Datapath, cfg: KernelConfig, features: Features, absent: Iterable[str] = ()
    ) -> None:
        self.dp = dp
        self.cfg = cfg
        self.features = features
        self.absent = set(absent)
        self.attached: dict[str, str] = {}  # ifname -> "native" | "generic" | "replaced"
        self.quic_ports: set[int] | None = None  # gw_quic_ports as last written (None: not yet)

    # -- sockets -----------------------------------------------------------------------

    def prepare_group(self, sock: socket.socket) -> None:
        """Attach the reuseport program to a new group (its first socket, before bind)."""
        self.dp.attach_reuseport(sock)

    def steer(
        self,
        sockets: Mapping[tuple[SocketKey, int], socket.socket],
        cpus: Iterable[int],
        *,
        quic: Collection[SocketKey] = (),
    ) -> None:
        """Sockarray and XDP CPU slots = the open sockets of `cpus` (the CPUs with a
        worker); a CPU not listed is taken out of both. Additions precede removals.

        Every generation on a CPU reads that CPU's socket, so each socket sits at the key
        gateway.steering.shared_socket_key(cpu) (the plan's generation 0) for good: a
        reload moves nothing in the sockarray.

        `quic`: the sockets of `protocol = "quic"` listeners. Their groups are flagged QUIC
        with the fixed short-header DCID length of gateway/quic_cid.py, so the reuseport
        program steers each datagram by the worker key in its destination ID (the key the
        worker got in its Boot) to its CPU's socket; a draining worker's datagrams reach
        that socket too, where its successor hands them over by pid
        (workers/quic_listener.py). Their ports are the XDP program's QUIC ports: it
        hashes the DCID instead of the 4-tuple, so a rebound client keeps its CPU."""
        live = set(cpus)
        workers: dict[int, dict[ListenerKey, int]] = {cpu: {} for cpu in sorted(live)}
        quic_groups: dict[ListenerKey, int] = {}
        for (key, cpu), sock in sockets.items():
            if cpu in live and sock.fileno() >= 0:
                lk = listener_key(sock)
                workers[cpu][lk] = sock.fileno()
                if key in quic:
                    quic_groups[lk] = SHORT_DCID_LEN_BYTES
        ports = {lk.port for lk in quic_groups}
        try:
            plan = self.dp.set_workers(
                {c: w for c, w in workers.items() if w},
                quic_short_dcid_len=quic_groups,
            )
            if ports != self.quic_ports:
                self.dp.set_quic(ports, SHORT_DCID_LEN_BYTES)
                self.quic_ports = ports
        except (BpfError, SteeringError) as exc:
            log.error("kernel_steer_failed", error=str(exc), cpus=sorted(live))
            return
        log.info(
            "kernel_steered",
            cpus=sorted(plan.cpus),
            groups=len(plan.groups),
            sockets=sum(len(g.sockets) for g in plan.groups.values()),
            quic_ports=sorted(ports),
        )

    # -- interfaces, deny list, rate cap ------------------------------------------------

    def _mode(self, ifname: str) -> str:
        if self.cfg.mode == "native" and not self.features.native_xdp.get(ifname):
            return "generic"  # not required (start would have failed): fall back
        return self.cfg.mode

    def detach_stale_links(self) -> None:
        """A crashed supervisor leaves its XDP links pinned (on purpose: steering goes on
        until the next one adopts them). One on an interface this config does not steer
        (removed from the file, or gone) would steer forever with nobody to own it:
        detach it."""
        wanted = set(self.cfg.interfaces) - self.absent
        for ifname in self.dp.pinned_links():
            if ifname not in wanted:
                self.dp.detach(ifname)
                log.warning("kernel_stale_link_detached", interface=ifname)

    def attach_interfaces(self) -> None:
        """XDP on every configured interface that exists (adopted links: program swapped)."""
        for ifname in self.cfg.interfaces:
            if ifname in self.absent or ifname in self.attached:
                continue
            try:
                how = self.dp.attach(ifname, self._mode(ifname))
            except (BpfError, OSError) as exc:
                if self.cfg.required:
                    raise DatapathUnavailable(f"[kernel] required = true: XDP on {ifname}: {exc}")
                log.error("kernel_xdp_attach_failed", interface=ifname, error=str(exc))
                continue
            self.attached[ifname] = how
            log.info("kernel_xdp_attached", interface=ifname, how=how, mode=self.cfg.mode)

    def apply_config(self, new: KernelConfig, old: KernelConfig | None = None) -> None:
        """Deny list and rate cap from the config. At start (old None) every configured
        CIDR is added (entries adopted from an earlier supervisor stay); at reload the
        CIDRs removed from the file are removed, and runtime `deny add` entries stay.

        Raises DatapathApplyFailed (a map write refused, e.g. a full deny map) or
        DatapathUnavailable (`required` and an interface cannot be attached); the caller
        decides (start: exit 69; reload: a failed reload, see `revert_config`)."""
        try:
            self._apply_config(new, old)
        except (BpfError, OSError, ValueError) as exc:
            raise DatapathApplyFailed(str(exc)) from exc

    def revert_config(self, old: KernelConfig, failed: KernelConfig) -> None:
        """Best effort after a failed reload: back to `old`'s deny list, rate cap and
        interfaces. A runtime `deny add` of a CIDR that only `failed` listed goes too."""
        try:
            self._apply_config(old, failed)
        except (BpfError, OSError, ValueError, DatapathUnavailable) as exc:
            log.error("kernel_revert_failed", error=str(exc))

    def _apply_config(self, new: KernelConfig, old: KernelConfig | None) -> None:
        for cidr in new.deny:
            self.dp.deny_add(cidr)
        if old is not None:
            keep = {ipaddress.ip_network(c, strict=False) for c in new.deny}
            for cidr in old.deny:
                if ipaddress.ip_network(cidr, strict=False) not in keep:
                    self.dp.deny_del(cidr)
            for ifname in set(old.interfaces) - set(new.interfaces):
                if ifname in self.attached:
                    self.dp.detach(ifname)
                    del self.attached[ifname]
                    log.info("kernel_xdp_detached", interface=ifname)
            if (old.enabled, old.mode, old.instance) != (new.enabled, new.mode, new.instance):
                log.warning("kernel_restart_required", keys="kernel.enabled/mode/instance")
        self.dp.set_rate_cap(new.new_flow_cap_per_sec, new.new_flow_ipv6_prefix)
        self.cfg = new
        if old is not None:
            self.absent = {i for i in new.interfaces if not _interface_exists(i)}
            self.attach_interfaces()

    def deny_list(self) -> list[str]:
        found = []
        for name, bits in (("gw_deny_v4", 32), ("gw_deny_v6", 128)):
            for key in self.dp.maps[name].iter_keys():
                raw = bytes(list(key.addr))
                addr = ipaddress.ip_address(raw[: bits // 8])
                found.append(str(ipaddress.ip_network(f"{addr}/{int(key.prefixlen)}")))
        return sorted(found)

    # -- gatewayctl kernel ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        xdp = self.dp.stats()
        cfg = self.dp.config()
        return {
            "instance": self.cfg.instance,
            "interfaces": dict(self.attached),
            "cpus": sorted(self.dp.plan.cpus),
            "hash_seed": cfg["hash_seed"],
            "nslots": cfg["nslots"],
            "cpu_slots": list(self.dp.plan.cpu_slots),
            "new_flow_cap_per_sec": cfg["new_flows_per_s"],
            "new_flow_ipv6_prefix": cfg["new_flow_v6_prefix"],
            "xdp": xdp,
            "xdp_totals": {reason: sum(v) for reason, v in xdp.items()},
            "reuseport": self.dp.reuseport_stats(),
            "quic_ports": self.dp.quic_ports(),
            "reuseport_groups": self.dp.reuseport_groups(),
        }

    async def command(self, args: list[str]) -> Response:
        try:
            return self._command(args)
        except (BpfError, OSError) as exc:
            return Response(ok=False, errors=[f"kernel: {exc}"])

    def _command(self, args: list[str]) -> Response:
        if args == ["stats"]:
            return Response(ok=True, data=self.stats())
        if args == ["deny", "list"]:
            return Response(ok=True, data={"deny": self.deny_list()})
        if len(args) == 3 and args[0] == "deny" and args[1] in ("add", "del"):
            try:
                net = ipaddress.ip_network(args[2], strict=False)
            except ValueError:
                return Response(
                    ok=False,
                    errors=[
                        f"{args[2]!r} is not a CIDR; use e.g. 192.0.2.0/24, 192.0.2.7 or 2001:db8::/32"
                    ],
                )
            if args[1] == "add":
                self.dp.deny_add(str(net))
                log.info("kernel_deny_added", cidr=str(net))
                return Response(ok=True, data={"denied": str(net)})
            if not self.dp.deny_del(str(net)):
                return Response(ok=False, errors=[f"{net} is not in the deny list"])
            log.info("kernel_deny_removed", cidr=str(net))
            return Response(ok=True, data={"removed": str(net)})
        return Response(ok=False, errors=[f"unknown kernel command {' '.join(args)!r}; {USAGE}"])

    # -- metrics and stop -------------------------------------------------------------------

    def export_counters(self, metrics: SupervisorMetrics) -> None:
        for reason, per_cpu in self.dp.stats().items():
            for cpu, total in enumerate(per_cpu):
                metrics.set_kernel_packets(cpu, reason, total)

    async def serve_metrics(
        self, metrics: SupervisorMetrics, interval_s: float = METRICS_INTERVAL_S
    ) -> None:
        while True:
            try:
                self.export_counters(metrics)
            except BpfError as exc:
                log.warning("kernel_counters_unreadable", error=str(exc))
            await trio.sleep(interval_s)

    def close(self, *, unload: bool) -> None:
        """unload=True: detach XDP and remove programs and pins (plain stop).
        unload=False: keep links and pins for the next supervisor to adopt."""
        self.dp.close(unload=unload)
        log.info("kernel_datapath_closed", unloaded=unload, instance=self.cfg.instance)
