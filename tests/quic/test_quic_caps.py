"""QUIC connections against the worker's connection gate: a `quic` listener's connections
count against `runtime.per_ip_connection_cap` like TCP ones; an Initial over the cap opens
nothing (the client's handshake times out), and a slot freed by a closed connection is
taken again. One worker, so the per-worker cap is the whole cap."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from running_gateway import free_port

from tools.make_certs import CertFiles


def _config(certs: CertFiles, port: int) -> str:
    return f"""
[runtime]
workers = 1
per_ip_connection_cap = 2

[[listeners]]
name = "h3"
address = "127.0.0.1:{port}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[[listeners.backends]]
address = "127.0.0.1:{free_port()}"
protocol = "h1"
"""


def _client() -> QuicConfiguration:
    conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=1.0)
    conf.verify_mode = ssl.CERT_NONE
    conf.server_name = "localhost"
    return conf


def test_per_ip_cap_drops_the_extra_quic_connection_until_one_closes(
    gateway_factory: type, certs: CertFiles
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gateway_factory.start(_config(certs, port))

    async def main() -> tuple[str, str]:
        async with (
            connect("127.0.0.1", port, configuration=_client()),
            connect("127.0.0.1", port, configuration=_client()),
        ):
            try:
                async with connect("127.0.0.1", port, configuration=_client()):
                    third = "connected"
            except ConnectionError:
                third = "refused"
        await asyncio.sleep(0.3)  # the two CONNECTION_CLOSEs reach the gateway
        async with connect("127.0.0.1", port, configuration=_client()):
            fourth = "connected"
        return third, fourth

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ("refused", "connected")
