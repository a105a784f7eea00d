"""`protocol = "quic_passthrough"` end to end with real QUIC: aioquic HTTP/3 servers with
Retry on as backends, aioquic clients, the real gateway (supervisor + 2 workers).

Each backend answers `NAME ODCID` and logs every connection it accepts, so a test knows
which backend served each request and that each connection lived on exactly one
backend. On loopback a datagram is received on the CPU that sent it and the per-CPU
sockets carry SO_INCOMING_CPU, so a client pinned to a CPU talks to that CPU's worker.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from h3_clients import ConnResult, H3Client, one_connection
from quic_peers import H3Backends, RebindingRelay, passthrough_config, results_of, run_clients
from running_gateway import free_port

from tools.make_certs import CertFiles


@pytest.fixture
def backends(tmp_path: Path, certs: CertFiles) -> Iterator[H3Backends]:
    b = H3Backends(tmp_path, certs, 3)
    yield b
    b.stop()


def assert_served_once(results: list[dict[str, object]], backends: H3Backends, count: int) -> None:
    failed = [r for r in results if not r["ok"]]
    assert len(results) == count
    assert not failed, f"{len(failed)} failed, e.g. {failed[:3]}"
    served = backends.served()
    for r in results:
        names = {str(b).split()[0] for b in r["bodies"]}  # type: ignore[attr-defined]
        assert len(names) == 1, r
        # ... and the backend saw one peer address: the gateway never moved the connection.
        assert len({str(b).split()[2] for b in r["bodies"]}) == 1, r  # type: ignore[attr-defined]
        # The connection's backend accepted it once; no other backend ever saw it.
        assert served[str(r["odcid"])] == names, (r, served[str(r["odcid"])])


@pytest.mark.slow
def test_200_connections_with_retry_each_served_by_one_backend(
    gateway_factory: type, backends: H3Backends, certs: CertFiles
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gateway_factory.start(passthrough_config(port, backends))
    # One client process per CPU, so both workers carry connections.
    procs = [run_clients(port, certs, connections=100, cpu=cpu, concurrency=10) for cpu in (0, 1)]
    results = [r for p in procs for r in results_of(p)]
    assert_served_once(results, backends, 200)
    used = {str(r["bodies"][0]).split()[0] for r in results}  # type: ignore[index]
    assert used == set(backends.names)  # Maglev spread them over every backend


def _active_by_cpu(gw: object) -> dict[int, int]:
    return {w["cpu"]: w["active_connections"] for w in gw.ready_workers()}  # type: ignore[attr-defined]


def _wait_active(gw: object, cpu: int, timeout_s: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while _active_by_cpu(gw).get(cpu, 0) < 1:
        assert time.monotonic() < deadline, f"worker on cpu {cpu} never opened a session"
        time.sleep(0.2)


@pytest.mark.slow
def test_rebinding_new_connection_id_and_another_worker_keep_the_backend(
    gateway_factory: type, backends: H3Backends, certs: CertFiles
) -> None:
    """Through a relay pinned to CPU 0: (a) the relay switches its source port twice mid-
    connection (NAT rebinding); (b) the client switches to a server-issued connection ID
    the gateway never saw (aioquic change_connection_id), then its address changes; (c) the
    relay moves to CPU 1, so the rest of the connection reaches the other worker, which
    knows neither the address nor the connection except through the shared table."""
    port = free_port(socket.SOCK_DGRAM)
    gw = gateway_factory.start(passthrough_config(port, backends))
    ca = str(certs.ca_cert)

    async def scenario(relay: RebindingRelay) -> list[ConnResult]:
        host, rport = relay.address

        async def rebinding(client: H3Client, r: int) -> None:
            if r in (1, 3):
                relay.rebind()

        async def new_cid_then_rebind(client: H3Client, r: int) -> None:
            if r == 1:
                client._quic.change_connection_id()
            elif r == 2:
                relay.rebind()

        async def other_worker(client: H3Client, r: int) -> None:
            if r == 1:
                _wait_active(gw, 0)
                assert _active_by_cpu(gw).get(1, 0) == 0
                relay.move_to_cpu(1)

        out = []
        for i, action in enumerate((rebinding, new_cid_then_rebind, other_worker)):
            out.append(await one_connection(host, rport, ca, i, 5, action))
        return out

    relay = RebindingRelay(("127.0.0.1", port), cpu=0)
    try:
        results = asyncio.run(scenario(relay))
        assert len(set(relay.source_ports())) == 4  # the first port and three rebindings
    finally:
        relay.close()
    for r in results:
        assert r.ok, r
        assert len(r.backends) == 1, r
    # The client's own address changes are migrations the backend sees; the move to the
    # other worker is not (it sends from the flow's shared port).
    assert [len(r.peers) for r in results] == [3, 2, 1], [r.peers for r in results]
    _wait_active(gw, 1)  # the moved connection was served through the CPU 1 worker
    served = backends.served()
    for r in results:
        assert served[r.odcid] == r.backends


@pytest.mark.slow
def test_quic_lb_server_ids_route_without_the_table(
    gateway_factory: type, tmp_path: Path, certs: CertFiles
) -> None:
    """Backends mint QUIC-LB plaintext CIDs (server IDs 0001..0003, also in their Retry
    SCIDs). With a route table of ONE entry, 40 concurrent connections x 5 requests still
    reach their backends, so routing by decoding the CID, not the table, carries them; so
    does a connection whose address changes."""
    sids = ["0001", "0002", "0003"]
    backends = H3Backends(tmp_path, certs, 3, quic_lb_sids=sids)
    try:
        port = free_port(socket.SOCK_DGRAM)
        quic_lb = "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 2\n"
        gateway_factory.start(
            passthrough_config(port, backends, extra="max_routes = 1", quic_lb=quic_lb)
        )
        procs = [run_clients(port, certs, connections=20, cpu=c, concurrency=10) for c in (0, 1)]
        results = [r for p in procs for r in results_of(p)]
        assert_served_once(results, backends, 40)

        async def rebind_twice(relay: RebindingRelay) -> ConnResult:
            async def action(client: H3Client, r: int) -> None:
                if r in (1, 3):
                    relay.rebind()

            return await one_connection(*relay.address, str(certs.ca_cert), 99, 5, action)

        relay = RebindingRelay(("127.0.0.1", port))
        try:
            moved = asyncio.run(rebind_twice(relay))
        finally:
            relay.close()
        assert moved.ok and len(moved.backends) == 1, moved
    finally:
        backends.stop()


@pytest.mark.slow
def test_reloads_a_drain_and_a_backend_kill_lose_no_connection_of_a_surviving_backend(
    gateway_factory: type, backends: H3Backends, certs: CertFiles, tmp_path: Path
) -> None:
    """Connections that live ~1 s each run from both CPUs while the gateway reloads five
    times (every live connection moves to a new worker generation, which knows it only
    through the shared tables), one worker is drained (`gatewayctl drain 0`) and backend
    b0 is killed. Every connection a surviving
    backend accepted completes; the only failures are b0's connections and new ones
    routed to b0 before passive health ejected it."""
    import time

    port = free_port(socket.SOCK_DGRAM)
    outlier = "[listeners.outlier]\nconsecutive_failures = 2\n"
    gw = gateway_factory.start(passthrough_config(port, backends) + outlier)
    stop = tmp_path / "stop-clients"
    procs = [
        # A connection sent to the dead backend gives up after 6 s.
        run_clients(
            port,
            certs,
            connections=0,
            cpu=c,
            concurrency=6,
            until_file=stop,
            pause_ms=200,
            timeout_s=6,
        )
        for c in (0, 1)
    ]
    killed_at = 0.0
    try:
        time.sleep(1.5)
        for n in range(5):
            out = gw.ctl("reload")
            assert out.returncode == 0, out.stdout + out.stderr
            if n == 2:
                backends.kill(0)
                killed_at = time.time()
            time.sleep(0.8)
        out = gw.ctl("drain", "0", "--timeout", "2")
        assert out.returncode == 0, out.stdout + out.stderr
        time.sleep(1.0)
    finally:
        stop.touch()
    results = [r for p in procs for r in results_of(p)]
    served = backends.served()
    lost = []
    for r in results:
        if r["ok"]:
            bodies = [str(b).split() for b in r["bodies"]]  # type: ignore[attr-defined]
            assert len({b[0] for b in bodies}) == 1, r
            # Reloads and the drain moved it between workers; its backend never saw it move.
            assert len({b[2] for b in bodies}) == 1, r
            continue
        where = served.get(str(r["odcid"]), set())
        if "b0" in where or (not where and float(r["started_at"]) >= killed_at - 1.0):  # type: ignore[arg-type]
            continue  # b0's own connection (accepted by it, or sent to it after its death)
        lost.append((r, where))
    assert not lost, f"{len(lost)} connections of surviving backends failed: {lost[:3]}"
    ok = [r for r in results if r["ok"]]
    assert len(ok) >= 40, f"only {len(ok)} of {len(results)} connections completed"
    survivors = {
        str(r["bodies"][0]).split()[0] for r in ok if float(r["started_at"]) > killed_at + 2
    }  # type: ignore[index, arg-type]
    assert survivors and "b0" not in survivors  # new connections avoided the dead backend
