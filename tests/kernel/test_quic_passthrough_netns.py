"""QUIC passthrough behind the kernel datapath: XDP (generic) on the server veth and the
reuseport program, the real gateway with 2 workers in the server namespace, aioquic
HTTP/3 servers (Retry on) on its loopback, aioquic clients in the client namespace.

XDP hashes a passthrough listener's datagrams by 4-tuple (its port is not a QUIC-worker-
key port), so one client address stays on one CPU's worker; a client whose address
changes may land on the other worker, which knows its connection only through the
shared tables. The test steers a rebinding onto the other CPU on purpose, with the same
flow hash the XDP program computes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_netns import NetnsGateway, predicted_cpu
from kernel_netns import Veth, in_netns

from kernel import bpffs
from tools.make_certs import CertFiles, make_certs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quic"))  # the QUIC peers
from h3_clients import H3Client, one_connection
from quic_peers import H3Backends, RebindingRelay, results_of, run_clients

pytestmark = [pytest.mark.root, pytest.mark.slow]

QUIC_PORT = 4433


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"gwtest-{uuid.uuid4().hex[:8]}"
    yield name
    pins = bpffs.instance_dir(name)
    if pins.exists():
        subprocess.run(["rm", "-rf", str(pins)], check=False)


def config(veth: Veth, instance: str, backends: H3Backends) -> str:
    text = f"""
[runtime]
workers = 2
drain_timeout_ms = 2000

[kernel]
enabled = true
required = true
interfaces = ["{veth.srv_if}"]
mode = "generic"
instance = "{instance}"

[[listeners]]
name = "quicpt"
address = "{veth.srv_ip}:{QUIC_PORT}"
protocol = "quic_passthrough"
[listeners.balancer]
policy = "maglev"
"""
    for p in backends.ports:
        text += f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n'
    return text


def test_passthrough_with_retry_behind_xdp_and_a_rebinding_onto_the_other_cpu(
    veth: Veth, obj_dir: Path, instance: str, tmp_path: Path
) -> None:
    certs: CertFiles = make_certs(tmp_path / "certs")
    with in_netns(veth.srv):
        backends = H3Backends(tmp_path, certs, 3)
    gw = NetnsGateway(tmp_path, config(veth, instance, backends), veth, obj_dir)
    try:
        gw.start()
        assert not gw.events("kernel_fallback")
        with in_netns(veth.cli):
            procs = [
                run_clients(QUIC_PORT, certs, connections=100, concurrency=10, host=veth.srv_ip)
                for _ in range(2)
            ]
        results = [r for p in procs for r in results_of(p)]
        failed = [r for r in results if not r["ok"]]
        assert len(results) == 200 and not failed, failed[:3]
        served = backends.served()
        for r in results:
            names = {str(b).split()[0] for b in r["bodies"]}  # type: ignore[attr-defined]
            assert len(names) == 1 and served[str(r["odcid"])] == names, r

        # A rebinding onto a source port XDP sends to the other CPU, on purpose.
        stats = gw.kernel_stats()
        relay_port = 41000

        def cpu_of(sport: int) -> int:
            return predicted_cpu(stats, veth.cli_ip, sport, veth.srv_ip, QUIC_PORT, proto=17)

        other_port = next(p for p in range(41001, 42000) if cpu_of(p) != cpu_of(relay_port))
        with in_netns(veth.cli):
            relay = RebindingRelay((veth.srv_ip, QUIC_PORT), source_ip=veth.cli_ip)
            try:
                relay.ups[0].close()
                relay.ups[0] = relay._upstream(relay_port)

                async def moved() -> object:
                    async def action(client: H3Client, r: int) -> None:
                        if r == 1:
                            relay.rebind(other_port)

                    return await one_connection(*relay.address, str(certs.ca_cert), 0, 5, action)

                result = asyncio.run(moved())
            finally:
                relay.close()
        # The worker of the other CPU has neither a flow for the new address nor the route
        # except through the shared tables: without them the last requests time out.
        assert result.ok and len(result.backends) == 1, result  # type: ignore[attr-defined]
    finally:
        gw.stop()
        backends.stop()
