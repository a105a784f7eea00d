"""QUIC-terminate listeners steered by connection ID in the kernel (issue 14).

The real gateway in the server namespace of a veth pair, XDP (generic) on its side, the
reuseport program on every group: the supervisor flags the `protocol = "quic"` listener's
UDP group QUIC with the fixed short-header DCID length of gateway/quic_cid.py and puts its
port in the XDP program's QUIC ports, so every datagram of a connection reaches the
socket of the CPU named by the worker key in its destination ID whatever its source
address. Evidence: the reuseport program's `selected_cid` counter, the workers'
`quic_first_handoff` events (a handoff between the workers of two CPUs would mean the
kernel delivered to the wrong CPU), and which worker (pid) served each request.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import connect
from gateway_netns import NetnsGateway, predicted_cpu, start_backend, wait_for
from h3_client import Client, LongLivedRun, check_long_lived, client_config, request_every_100ms
from kernel_netns import Veth, in_netns

from gateway import steering
from gateway.quic_cid import SHORT_DCID_LEN_BYTES, decode
from kernel import bpffs
from tools.make_certs import make_certs

pytestmark = [pytest.mark.root]

QUIC_PORT, HTTP_BACKEND_PORT = 8443, 9080


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"gwquic-{uuid.uuid4().hex[:8]}"
    yield name
    pins = bpffs.instance_dir(name)
    if pins.exists():
        subprocess.run(["rm", "-rf", str(pins)], check=False)


@pytest.fixture
def quic_gateway(
    tmp_path: Path, veth: Veth, obj_dir: Path, instance: str
) -> Iterator[NetnsGateway]:
    certs = make_certs(tmp_path / "certs")
    backend = start_backend(veth, http_port=HTTP_BACKEND_PORT)
    config = f"""
[runtime]
workers = 2
drain_timeout_ms = 3000

[observability]
log_format = "json"

[kernel]
enabled = true
required = true
interfaces = ["{veth.srv_if}"]
mode = "generic"
instance = "{instance}"

[[listeners]]
name = "h3"
address = "{veth.srv_ip}:{QUIC_PORT}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[[listeners.backends]]
address = "127.0.0.1:{HTTP_BACKEND_PORT}"
protocol = "h1"
"""
    gw = NetnsGateway(tmp_path, config, veth, obj_dir)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        backend.kill()
        backend.wait()


def selected_cid(gw: NetnsGateway) -> int:
    return sum(gw.kernel_stats()["reuseport"]["selected_cid"])


def cpu_of_pid(gw: NetnsGateway) -> dict[int, int]:
    """Every worker that ever served the listener -> its CPU (from its worker key)."""
    return {
        e["pid"]: e["worker_key"] % steering.MAX_CPUS
        for e in gw.events("quic_listener_started")
        if e.get("listener") == "h3"
    }


def access(gw: NetnsGateway, prefix: str, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10  # the access log is flushed once a second
    while True:
        found = [e for e in gw.events("access") if str(e.get("path", "")).startswith(prefix)]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_a_rebound_client_keeps_its_worker_by_connection_id(
    quic_gateway: NetnsGateway, veth: Veth
) -> None:
    """NAT rebinding: the client's next datagrams leave from new source ports, chosen so that
    the 4-tuple hash would put them on the *other* CPU. The kernel still delivers them to
    the owner's socket (selected by the DCID's worker key); no worker hands any over."""
    gw = quic_gateway
    stats = gw.kernel_stats()
    assert stats["cpus"] == [0, 1], stats
    cid_before = selected_cid(gw)
    authority = f"{veth.srv_ip}:{QUIC_PORT}"
    rebinds: list[tuple[int, int]] = []  # (source port, the CPU its 4-tuple hashes to)

    async def main() -> tuple[list[int], int]:
        statuses = []
        loop = asyncio.get_running_loop()
        async with connect_client(veth) as c:
            owner = decode(c._quic._peer_cid.cid)
            assert owner is not None, c._quic._peer_cid.cid.hex()
            owner_cpu = owner.key % steering.MAX_CPUS
            for i in range(3):
                statuses.append((await c.request(authority, f"/rebind-{i}"))[0])
            other = [
                p
                for p in range(40000, 41000)
                if predicted_cpu(stats, veth.cli_ip, p, veth.srv_ip, QUIC_PORT, proto=17)
                != owner_cpu
            ][:3]
            for n, sport in enumerate(other):
                old = c._transport
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", sport))
                await loop.create_datagram_endpoint(lambda: c, sock=sock)
                assert old is not None
                old.close()  # the old port is gone: answers must follow the client
                rebinds.append((sport, 1 - owner_cpu))
                for i in range(2):
                    path = f"/rebind-{3 + 2 * n + i}"
                    statuses.append((await c.request(authority, path, timeout_s=5.0))[0])
        return statuses, owner_cpu

    with in_netns(veth.cli):
        statuses, owner_cpu = asyncio.run(asyncio.wait_for(main(), 30))
    assert statuses == [200] * 9
    served = access(gw, "/rebind-", 9)
    assert len(served) == 9, served
    pids = {e["pid"] for e in served}
    assert len(pids) == 1, served  # one owner throughout
    assert cpu_of_pid(gw)[pids.pop()] == owner_cpu
    assert not gw.events("quic_first_handoff"), gw.events("quic_first_handoff")
    selected = selected_cid(gw) - cid_before
    xdp = gw.kernel_stats()["xdp_totals"]
    assert selected >= 12, selected  # at least the 6 requests after rebinding and their ACKs
    assert xdp["redirect_quic"] > 0, xdp  # the client's Initials: its own DCID, hashed
    # every later datagram carries our ID: XDP sends it to the CPU the ID names
    assert xdp["redirect_quic_owner"] >= 12, xdp
    print(
        f"rebinds {rebinds}; selected_cid +{selected}; xdp redirect_quic "
        f"{xdp['redirect_quic']}, redirect_quic_owner {xdp['redirect_quic_owner']}"
    )

    # The maps follow the config: the listener moves to another port on reload.
    assert stats["quic_ports"] == [QUIC_PORT], stats
    assert quic_groups(stats) == [(QUIC_PORT, 1, SHORT_DCID_LEN_BYTES)], stats
    moved = QUIC_PORT + 1
    gw.write_config(gw.config_path.read_text().replace(f":{QUIC_PORT}", f":{moved}"))
    assert gw.ctl("reload").returncode == 0
    wait_for(
        lambda: (
            gw.kernel_stats()["quic_ports"] == [moved]
            and quic_groups(gw.kernel_stats()) == [(moved, 1, SHORT_DCID_LEN_BYTES)]
        ),
        what="the moved listener's port and group in the maps",
        seen=lambda: (gw.kernel_stats()["quic_ports"], gw.kernel_stats()["reuseport_groups"]),
    )


def quic_groups(stats: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(port, flags, short DCID length) of every UDP group in gw_rp_groups."""
    return [
        (g["port"], g["flags"], g["quic_short_dcid_len"])
        for g in stats["reuseport_groups"]
        if g["proto"] == 17
    ]


def connect_client(veth: Veth) -> Any:
    return connect(veth.srv_ip, QUIC_PORT, configuration=client_config(), create_protocol=Client)


@pytest.mark.slow
def test_a_client_requesting_every_100ms_across_reloads_and_a_drain_with_the_datapath(
    quic_gateway: NetnsGateway, veth: Veth
) -> None:
    """Issue 14's long-lived client with the kernel datapath: five reloads and one drain,
    no failed request; the first connection served by its worker past the first reload
    (until its generation's drain budget), the last by a newer generation. Datagrams are
    steered by connection ID (selected_cid grows), and a handoff only ever happens between
    two workers of one CPU (a draining worker and its successor share the CPU's socket)."""
    gw = quic_gateway
    cid_before = selected_cid(gw)

    def operate(run: LongLivedRun) -> None:
        for _ in range(5):
            run.ops.append(("reload", gw.ctl("reload").returncode, time.monotonic()))
            time.sleep(0.5)
        drained = gw.ctl("drain", "0", "--timeout", "3").returncode
        run.ops.append(("drain", drained, time.monotonic()))

    with in_netns(veth.cli):
        run = request_every_100ms(veth.srv_ip, QUIC_PORT, operate)
    assert [(op, code) for op, code, _ in run.ops] == [("reload", 0)] * 5 + [("drain", 0)], run.ops
    check_long_lived(run, lambda: gw.events("access"))
    selected = selected_cid(gw) - cid_before
    assert selected >= len(run.served), (selected, len(run.served))
    cpus = cpu_of_pid(gw)
    handoffs = gw.events("quic_first_handoff")
    assert all(cpus[e["pid"]] == cpus[e["owner"]] for e in handoffs), (handoffs, cpus)
    print(f"selected_cid +{selected}; handoffs (first per worker, same CPU): {len(handoffs)}")
