"""End to end across a veth pair between two network namespaces: XDP (generic and native)
steers each flow to the CPU the plan predicts, where reuseport_select hands it to the
worker pinned there; deny-listed sources are dropped and counted; replacing the program
with bpf_link_update under a UDP stream loses nothing."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernel_netns import Veth, in_netns, sh

from gateway import steering
from kernel.datapath import Datapath
from kernel.probe import probe
from kernel.socket_steering import listener_key

pytestmark = [pytest.mark.root, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
SEED = 0x5EED
TCP_PORT, UDP_PORT = 8080, 8053
DENIED_SRC = "10.77.0.3"


@dataclass
class Server:
    veth: Veth
    dp: Datapath
    workers: list[subprocess.Popen[str]]
    socks: list[socket.socket]

    def client(self, job: dict[str, object], wait: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.veth.cli,
                sys.executable,
                str(HERE / "e2e_client.py"),
                json.dumps(job),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if wait:
            proc.wait(timeout=60)
        return proc


def result(proc: subprocess.Popen[str]) -> dict[str, list[str]]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    parsed: dict[str, list[str]] = json.loads(out)
    return parsed


def reuseport_group(
    family: int, kind: int, host: str, port: int, dp: Datapath
) -> list[socket.socket]:
    socks = []
    for cpu in (0, 1):
        s = socket.socket(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if cpu == 0:
            dp.attach_reuseport(s)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        socks.append(s)
    return socks


@pytest.fixture(params=["generic", "native"])
def server(
    request: pytest.FixtureRequest, veth: Veth, obj_dir: Path, pin_root: Path
) -> Iterator[Server]:
    dp = Datapath.open("e2e", obj_dir, pin_root=pin_root, hash_seed=SEED)
    socks: list[socket.socket] = []
    workers: list[subprocess.Popen[str]] = []
    try:
        with in_netns(veth.srv):
            socks += reuseport_group(socket.AF_INET, socket.SOCK_STREAM, veth.srv_ip, TCP_PORT, dp)
            socks += reuseport_group(socket.AF_INET, socket.SOCK_DGRAM, veth.srv_ip, UDP_PORT, dp)
            socks += reuseport_group(
                socket.AF_INET6, socket.SOCK_STREAM, veth.srv_ip6, TCP_PORT, dp
            )
            for cpu in (0, 1):
                mine = socks[cpu::2]
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "e2e_worker.py"),
                            str(cpu),
                            *(str(s.fileno()) for s in mine),
                        ],
                        pass_fds=[s.fileno() for s in mine],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            assert dp.attach(veth.srv_if, request.param) == request.param
        dp.set_workers(
            {cpu: {listener_key(s): s.fileno() for s in socks[cpu::2]} for cpu in (0, 1)}
        )
        for w in workers:
            assert w.stdout is not None and w.stdout.readline() == "ready\n"
        sh("ip", "-n", veth.cli, "addr", "add", f"{DENIED_SRC}/24", "dev", veth.cli_if)
        yield Server(veth, dp, workers, socks)
    finally:
        for w in workers:
            w.kill()
            w.wait()
        for s in socks:
            s.close()
        dp.close(unload=True)


def expected_cpu(
    dp: Datapath, src: str, sport: int, dst: str, dport: int, proto: int
) -> int | None:
    h = steering.flow_hash(
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
        sport,
        dport,
        proto,
        seed=SEED,
    )
    return dp.plan.target_cpu(h)


def test_flows_reach_the_predicted_worker(server: Server) -> None:
    v, dp = server.veth, server.dp
    tcp4 = [[v.cli_ip, 20000 + i, v.srv_ip, TCP_PORT] for i in range(24)]
    tcp6 = [[v.cli_ip6, 21000 + i, v.srv_ip6, TCP_PORT] for i in range(12)]
    udp4 = [[v.cli_ip, 22000 + i, v.srv_ip, UDP_PORT] for i in range(24)]
    out = result(server.client({"tcp": tcp4 + tcp6, "udp": udp4}))
    want_tcp = [expected_cpu(dp, f[0], f[1], f[2], f[3], 6) for f in tcp4 + tcp6]  # type: ignore[arg-type]
    want_udp = [expected_cpu(dp, f[0], f[1], f[2], f[3], 17) for f in udp4]  # type: ignore[arg-type]
    assert set(want_tcp) == {0, 1} and set(want_udp) == {0, 1}
    # "<worker cpu> <SO_INCOMING_CPU of the accepted socket>"
    assert out["tcp"] == [f"{c} {c}" for c in want_tcp]
    assert out["udp"] == [str(c) for c in want_udp]
    stats = dp.stats()
    assert sum(stats["redirect_tcp"]) >= 36 * 3  # SYN, ACK, FIN at least per flow
    assert sum(stats["redirect_udp"]) >= 24
    assert sum(stats["pass_no_cpu"]) == 0
    assert sum(dp.reuseport_stats()["selected_cpu"]) == 36 + 24


def test_denied_source_is_dropped_and_counted(server: Server) -> None:
    v, dp = server.veth, server.dp
    dp.deny_add(f"{DENIED_SRC}/32")
    out = result(
        server.client(
            {
                "silent": [[DENIED_SRC, 23000, v.srv_ip, UDP_PORT]],
                "udp": [[v.cli_ip, 23001, v.srv_ip, UDP_PORT]],
            }
        )
    )
    assert out["silent"] == ["timeout"]
    assert out["udp"] == [str(expected_cpu(dp, v.cli_ip, 23001, v.srv_ip, UDP_PORT, 17))]
    assert sum(dp.stats()["drop_denied"]) >= 3  # three tries, all dropped


def test_link_update_under_a_udp_stream_loses_nothing(
    server: Server, obj_dir: Path, pin_root: Path
) -> None:
    """A second generation adopts the pinned link; programs flip while datagrams flow. Both
    generations count into the same pinned counters, so sent == counted means none bypassed."""
    v, dp = server.veth, server.dp
    min_rounds, per_round, min_s = 1000, 100, 3.0
    before = sum(dp.stats()["redirect_udp"])
    gen2 = Datapath.open("e2e", obj_dir, pin_root=pin_root)
    try:
        assert not gen2.created
        proc = server.client(
            {"stream": [v.cli_ip, 24000, v.srv_ip, UDP_PORT, min_rounds, per_round, min_s]},
            wait=False,
        )
        flips = 0
        started = time.monotonic()
        while proc.poll() is None:
            (gen2 if flips % 2 == 0 else dp).replace_program(v.srv_if)
            flips += 1
            time.sleep(0.001)
        elapsed_s = time.monotonic() - started
        rounds, counted = result(proc)["stream"]
        sent = rounds * (per_round + 1) + 1
        assert rounds >= min_rounds
        assert counted == rounds * per_round  # every datagram reached the worker
        assert sum(gen2.stats()["redirect_udp"]) - before == sent  # and went through XDP
        assert flips >= 20, (flips, elapsed_s)
        assert gen2.attach(v.srv_if) == "replaced"  # attach adopts the pinned link
    finally:
        gen2.close()
    assert os.path.exists(pin_root / "e2e" / "links" / v.srv_if)


def test_probe_finds_native_xdp_on_veth(veth: Veth, obj_dir: Path) -> None:
    with in_netns(veth.srv):
        features = probe((veth.srv_if, "lo"), obj_dir)
    assert features.native_xdp == {veth.srv_if: True, "lo": False}
    assert features.xdp_mode(veth.srv_if) == "native"
    assert list(features.fallbacks) == ["native_xdp:lo"]
