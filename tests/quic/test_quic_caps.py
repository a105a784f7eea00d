"""The caps of a `quic` listener, from the outside: its connections count against the
worker's connection gate like TCP ones — `runtime.per_ip_connection_cap` and the bounded
connection table `runtime.max_inflight_connections`; an Initial over a cap opens nothing
(the client's handshake times out) and a slot freed by a closed connection is taken again —
`[listeners.h3] idle_timeout_ms` closes a silent connection (and frees its slot), and
`[listeners.h3] max_concurrent_streams` is the MAX_STREAMS a client gets, so a request past
it waits for a stream to finish. One worker, so the per-worker caps are the whole caps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time

from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from h3_client import Client, client_config
from hypercorn_process import hypercorn_process
from running_gateway import free_port

from tools.make_certs import CertFiles


def _config(
    certs: CertFiles,
    port: int,
    *,
    runtime: str = "per_ip_connection_cap = 2",
    h3: str = "",
    backend_port: int | None = None,
) -> str:
    return f"""
[runtime]
workers = 1
{runtime}

[[listeners]]
name = "h3"
address = "127.0.0.1:{port}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
[listeners.h3]
{h3}
[[listeners.backends]]
address = "127.0.0.1:{backend_port or free_port()}"
protocol = "h1"
"""


def _client() -> QuicConfiguration:
    conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=1.0)
    conf.verify_mode = ssl.CERT_NONE
    conf.server_name = "localhost"
    return conf


async def _one_over_then_one_after(port: int, held: int) -> tuple[str, str]:
    """Hold ``held`` connections (idle timeout 20 s: all still open at the next one), try
    one more ("connected" or "refused"), close the held ones, then connect again."""
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                connect("127.0.0.1", port, configuration=client_config())
            )
            for _ in range(held)
        ]
        try:
            async with connect("127.0.0.1", port, configuration=_client()):
                over = "connected"
        except ConnectionError:
            over = "refused"
        for c in opened:  # all at once: each one's close waits out its closing period
            c.close()
    await asyncio.sleep(0.5)  # the CONNECTION_CLOSEs reach the gateway
    async with connect("127.0.0.1", port, configuration=_client()):
        after = "connected"
    return over, after


def test_per_ip_cap_drops_the_extra_quic_connection_until_one_closes(
    gateway_factory: type, certs: CertFiles
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gateway_factory.start(_config(certs, port))

    result = _one_over_then_one_after(port, held=2)
    assert asyncio.run(asyncio.wait_for(result, 20)) == ("refused", "connected")


def test_the_connection_table_is_bounded_by_max_inflight_connections(
    gateway_factory: type, certs: CertFiles
) -> None:
    """100 connections (the smallest table allowed) from one address under a per-IP cap
    that does not bind: the 101st is refused until one of the 100 closes."""
    port = free_port(socket.SOCK_DGRAM)
    runtime = "per_ip_connection_cap = 1000\nmax_inflight_connections = 100"
    gateway_factory.start(_config(certs, port, runtime=runtime))

    result = _one_over_then_one_after(port, held=100)
    assert asyncio.run(asyncio.wait_for(result, 60)) == ("refused", "connected")


def test_a_silent_connection_is_closed_at_the_idle_timeout_and_frees_its_slot(
    gateway_factory: type, certs: CertFiles
) -> None:
    """`idle_timeout_ms = 1000` is announced (max_idle_timeout) and applied: a connection
    silent for longer is gone on the gateway's side, its per-IP slot (cap 1) taking a new
    connection (while it lived, one was refused)."""
    port = free_port(socket.SOCK_DGRAM)
    gateway_factory.start(
        _config(certs, port, runtime="per_ip_connection_cap = 1", h3="idle_timeout_ms = 1000")
    )
    authority = f"127.0.0.1:{port}"

    async def main() -> tuple[float, str, str, str]:
        async with connect(
            "127.0.0.1", port, configuration=client_config(), create_protocol=Client
        ) as c:
            assert isinstance(c, Client)
            first = (await c.request(authority, "/"))[0]
            announced = c._quic._remote_max_idle_timeout
            try:  # the slot is taken while the connection lives
                async with connect("127.0.0.1", port, configuration=_client()):
                    while_alive = "connected"
            except ConnectionError:
                while_alive = "refused"
            await asyncio.sleep(1.8)  # silent past the gateway's 1 s
            async with connect("127.0.0.1", port, configuration=_client()):
                after_idle = "connected"
            # The effective idle timeout is the smaller of the two (RFC 9000 §10.1): the
            # client's side has ended the connection too.
            client_ended = c.closed is not None
            assert first >= 500  # nothing listens on the backend port: any answer will do
        return announced, while_alive, after_idle, client_ended

    announced, while_alive, after_idle, client_ended = asyncio.run(asyncio.wait_for(main(), 30))
    assert announced == 1.0
    assert (while_alive, after_idle, client_ended) == ("refused", "connected", True)


def test_max_concurrent_streams_is_the_clients_stream_limit(
    gateway_factory: type, certs: CertFiles
) -> None:
    """`max_concurrent_streams = 2`: the client's initial MAX_STREAMS is 2, three slow
    requests at once are all served, the third only once one of the first two ended (it
    waits in the client for the credit the gateway gives back as streams finish)."""
    port, backend_port = free_port(socket.SOCK_DGRAM), free_port()
    authority = f"127.0.0.1:{port}"
    with hypercorn_process(["--bind", f"127.0.0.1:{backend_port}"], backend_port):
        gateway_factory.start(
            _config(certs, port, h3="max_concurrent_streams = 2", backend_port=backend_port)
        )

        async def main() -> tuple[int, list[tuple[int, float]]]:
            async with connect(
                "127.0.0.1", port, configuration=client_config(), create_protocol=Client
            ) as c:
                assert isinstance(c, Client)
                limit = c._quic._remote_max_streams_bidi

                async def timed(i: int) -> tuple[int, float]:
                    status = (await c.request(authority, "/slow/600"))[0]
                    return status, time.monotonic()

                return limit, list(await asyncio.gather(*(timed(i) for i in range(3))))

        limit, done = asyncio.run(asyncio.wait_for(main(), 30))
    assert limit == 2
    assert [status for status, _ in done] == [200, 200, 200]
    ends = sorted(at for _, at in done)
    assert ends[2] - ends[0] >= 0.5, ends  # the third started after one of the first ended
