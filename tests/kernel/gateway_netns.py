"""The real gateway inside the server namespace of a veth pair, and clients in the other.

The supervisor is started from a thread that entered the server network namespace with
setns (not `ip netns exec`, which remounts /sys and hides bpffs, notes P5), so it sees the
same pins as the test. Backends run in the server namespace on its loopback. Client flows
bind an exact source address and port, so the test can predict each flow's CPU with
gateway.steering.flow_hash and the seed the gateway reports.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kernel_netns import Veth, in_netns
from running_gateway import ROOT, RunningGateway

from gateway import steering

TCP_PORT, TCP6_PORT, NEW_PORT, UDP_PORT = 8080, 8081, 8082, 8053
BACKEND_PORT, UDP_BACKEND_PORT, METRICS_PORT = 9000, 9053, 9100


def gateway_config(
    veth: Veth, instance: str, mode: str, *, extra_listener: bool = False, cap: int = 0
) -> str:
    text = f"""
[runtime]
workers = 2
drain_timeout_ms = 2000

[observability]
metrics_bind = "127.0.0.1:{METRICS_PORT}"

[kernel]
enabled = true
required = true
interfaces = ["{veth.srv_if}"]
mode = "{mode}"
instance = "{instance}"
new_flow_cap_per_sec = {cap}
deny = ["10.77.0.200/32"]
"""
    listeners = [("echo4", f"{veth.srv_ip}:{TCP_PORT}"), ("echo6", f"[{veth.srv_ip6}]:{TCP6_PORT}")]
    if extra_listener:
        listeners.append(("echo_new", f"{veth.srv_ip}:{NEW_PORT}"))
    for name, address in listeners:
        text += f"""
[[listeners]]
name = "{name}"
address = "{address}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{BACKEND_PORT}"
"""
    return (
        text
        + f"""
[[listeners]]
name = "udp4"
address = "{veth.srv_ip}:{UDP_PORT}"
protocol = "udp"
[[listeners.backends]]
address = "127.0.0.1:{UDP_BACKEND_PORT}"
"""
    )


class NetnsGateway(RunningGateway):
    """RunningGateway whose supervisor (and so its workers) live in `veth.srv`."""

    def __init__(self, tmp: Path, config: str, veth: Veth, obj_dir: Path) -> None:
        super().__init__(tmp, config, env={"EXPRESSGATEWAY_BPF_DIR": str(obj_dir)})
        self.veth = veth

    def start(self, *, wait_ready: bool = True) -> NetnsGateway:
        with in_netns(self.veth.srv):
            super().start(wait_ready=False)
        if wait_ready:
            self.wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL the supervisor (workers follow through PR_SET_PDEATHSIG)."""
        assert self.proc is not None
        pids = [w["pid"] for w in self.workers()]
        self.proc.kill()
        self.proc.wait()
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._log.close()

    def kernel_stats(self) -> dict[str, Any]:
        out = self.ctl("kernel", "stats", "--json")
        assert out.returncode == 0, out.stderr
        import json

        return json.loads(out.stdout)["data"]  # type: ignore[no-any-return]

    def settled_handled_by_cpu(self) -> dict[int, int]:
        """handled_by_cpu once a heartbeat period passes without change (recent flows in)."""
        last = self.handled_by_cpu()
        while True:
            time.sleep(1.1)
            now = self.handled_by_cpu()
            if now == last:
                return now
            last = now

    def handled_by_cpu(self) -> dict[int, int]:
        counts = {0: 0, 1: 0}
        for w in self.workers():
            counts[w["cpu"]] += w["handled_connections"]
        return counts

    def metrics_text(self) -> str:
        with in_netns(self.veth.srv):
            url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()  # type: ignore[no-any-return]


def start_backend(veth: Veth, *, http_port: int | None = None) -> subprocess.Popen[bytes]:
    """The demo backends on the server namespace's loopback (HTTP/1.1 too with `http_port`)."""
    http = ["--http", f"127.0.0.1:{http_port}"] if http_port is not None else []
    with in_netns(veth.srv):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.demo_backends",
                "--tcp-echo",
                f"127.0.0.1:{BACKEND_PORT}",
                "--udp-echo",
                f"127.0.0.1:{UDP_BACKEND_PORT}",
                *http,
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", BACKEND_PORT), timeout=0.5).close()
                return proc
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.05)


def echo_flow(src: str, sport: int, dst: str, dport: int, timeout_s: float = 5.0) -> bytes:
    """One TCP flow with an exact 4-tuple (call inside the client namespace)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    payload = f"{src} {sport}".encode()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, sport))
        s.connect((dst, dport))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    if data != payload:
        raise AssertionError(f"flow {src}:{sport} echoed {data!r}")
    return data


def udp_flow(src: str, sport: int, dst: str, dport: int, timeout_s: float = 1.0) -> bytes:
    """One UDP exchange from an exact source (three tries; call inside the client netns)."""
    payload = f"{src} {sport}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.bind((src, sport))
        for _ in range(3):
            s.sendto(payload, (dst, dport))
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if not data.endswith(payload):  # the demo UDP echo prefixes "backend=... peer=..."
                raise AssertionError(f"udp flow {src}:{sport} echoed {data!r}")
            return data
    raise TimeoutError(f"udp flow {src}:{sport}: no answer")


def predicted_cpu(
    stats: dict[str, Any], src: str, sport: int, dst: str, dport: int, proto: int = 6
) -> int:
    h = steering.flow_hash(
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
        sport,
        dport,
        proto,
        seed=stats["hash_seed"],
    )
    slots = stats["cpu_slots"]
    return int(slots[h % len(slots)])


def pick_flows(
    stats: dict[str, Any],
    src: str,
    dst: str,
    dport: int,
    want: dict[int, int],
    first_port: int,
    proto: int = 6,
) -> list[tuple[str, int, str, int]]:
    """Source ports from first_port on until each CPU has its wanted number of flows."""
    flows, have = [], dict.fromkeys(want, 0)
    sport = first_port
    while have != want:
        cpu = predicted_cpu(stats, src, sport, dst, dport, proto)
        if have.get(cpu, 0) < want.get(cpu, 0):
            have[cpu] += 1
            flows.append((src, sport, dst, dport))
        sport += 1
    return flows


def wait_for(
    predicate: Any, timeout_s: float = 8.0, what: str = "condition", seen: Any = None
) -> Any:
    """Poll until predicate() is truthy; the timeout message shows seen() if given."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            last = f" (last seen: {seen()})" if seen else ""
            raise TimeoutError(f"{what} not reached in {timeout_s}s{last}")
        time.sleep(0.2)
