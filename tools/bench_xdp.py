"""Benchmark (not a test): UDP packets/s through a veth pair, without XDP and with xdp_steer
in generic and native mode, in one run.

Topology: two network namespaces of our own joined by a veth (10.78.0.0/24, addresses only
inside them). Two sink processes pinned to CPU 0 and 1 drain a SO_REUSEPORT UDP group
steered by reuseport_select; a sender process in the client namespace blasts datagrams from
many source ports for --seconds. Delivered = the server namespace's Udp InDatagrams delta.

    python -m kernel.build --out build/bpf && python tools/bench_xdp.py --seconds 3

Needs root. Removes its namespaces and pins on exit, also on failure.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.datapath import Datapath
from kernel.socket_steering import listener_key

CLONE_NEWNET = 0x40000000
PORT = 9099
SRV_IP, CLI_IP = "10.78.0.1", "10.78.0.2"

SENDER = """
import socket, sys, time
dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
for s in socks:
    s.connect((dst, port))
payload = b"x" * 64
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in socks:
        for _ in range(32):
            try:
                s.send(payload)
                sent += 1
            except OSError:
                pass
print(sent)
"""

SINK = """
import os, socket, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
s = socket.socket(fileno=int(sys.argv[2]))
while True:
    s.recv(2048)
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def udp_in(ns: str) -> int:
    text = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("InDatagrams")])


def measure(srv: str, cli: str, seconds: float) -> tuple[int, int]:
    before = udp_in(srv)
    out = subprocess.run(
        ["ip", "netns", "exec", cli, sys.executable, "-c", SENDER, SRV_IP, str(PORT), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    time.sleep(0.2)
    return int(out), udp_in(srv) - before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--obj-dir", type=Path, default=Path("build/bpf"))
    args = ap.parse_args(argv)
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"egbs{tag}", f"egbc{tag}"
    pin_root = Path("/sys/fs/bpf/expressgateway-bench")
    sinks: list[subprocess.Popen[bytes]] = []
    socks: list[socket.socket] = []
    dp: Datapath | None = None
    try:
        sh("ip", "netns", "add", srv)
        sh("ip", "netns", "add", cli)
        sh(
            "ip",
            "-n",
            srv,
            "link",
            "add",
            "vsrv",
            "type",
            "veth",
            "peer",
            "name",
            "vcli",
            "netns",
            cli,
        )
        for ns, ifname, ip in ((srv, "vsrv", SRV_IP), (cli, "vcli", CLI_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off")
        dp = Datapath.open(f"bench{tag}", args.obj_dir, pin_root=pin_root)
        with in_netns(srv):
            for cpu in (0, 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                if cpu == 0:
                    dp.attach_reuseport(s)
                s.bind((SRV_IP, PORT))
                socks.append(s)
                sinks.append(
                    subprocess.Popen(
                        [sys.executable, "-c", SINK, str(cpu), str(s.fileno())],
                        pass_fds=[s.fileno()],
                    )
                )
        dp.set_workers({cpu: {listener_key(s): s.fileno()} for cpu, s in enumerate(socks)})
        time.sleep(0.3)
        print(f"{'mode':<10} {'sent/s':>12} {'delivered/s':>12} {'delivered %':>12}")
        for mode in ("none", "generic", "native"):
            if mode != "none":
                with in_netns(srv):
                    dp.detach("vsrv")
                    dp.attach("vsrv", mode)
            sent, delivered = measure(srv, cli, args.seconds)
            pct = 100.0 * delivered / sent if sent else 0.0
            print(
                f"{mode:<10} {sent / args.seconds:>12,.0f} {delivered / args.seconds:>12,.0f} {pct:>11.1f}%",
                flush=True,
            )
        stats = dp.stats()
        print("xdp counters:", {k: sum(v) for k, v in stats.items() if sum(v)})
        return 0
    finally:
        for p in sinks:
            p.kill()
            p.wait()
        for s in socks:
            s.close()
        if dp is not None:
            dp.close(unload=True)
        if pin_root.exists() and not any(pin_root.iterdir()):
            pin_root.rmdir()
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
