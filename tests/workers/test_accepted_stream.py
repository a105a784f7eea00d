"""workers/accepted_stream: a connection accepted from a prepared listener gets the stream
trio would build (TCP_NODELAY, TCP_NOTSENT_LOWAT 16 KiB, a working send conflict
detector) without trio's two setsockopt calls; one the listener was not prepared for gets
trio's own constructor. Real loopback sockets."""

from __future__ import annotations

import socket

import pytest
import trio

from workers.accepted_stream import accepted_stream, prepare_listener


def _options(stream: trio.SocketStream) -> tuple[int, int]:
    return (
        stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT),
    )


async def _accepted(prepared: bool) -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    if prepared:
        assert prepare_listener(listener)
    listener.listen()
    listener.setblocking(False)
    client = await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1])
    await trio.lowlevel.wait_readable(listener)
    raw, _ = listener.accept()
    listener.close()
    return accepted_stream(trio.socket.from_stdlib_socket(raw)), client


@pytest.mark.parametrize("prepared", [True, False])
async def test_the_stream_has_trios_options_and_works(prepared: bool) -> None:
    server, client = await _accepted(prepared)
    assert type(server) is trio.SocketStream
    assert _options(server) == (1, 2**14)
    assert set(vars(server)) == {"socket", "_send_conflict_detector"}  # trio's shape
    await server.send_all(b"ping")
    assert await client.receive_some(10) == b"ping"
    await client.send_all(b"pong")
    assert await server.receive_some(10) == b"pong"
    await server.aclose()
    assert await client.receive_some(10) == b""
    await client.aclose()


async def test_two_senders_at_once_are_refused_as_trio_refuses_them() -> None:
    server, client = await _accepted(prepared=True)
    big = b"x" * (8 << 20)  # more than the buffers hold: the first sender waits for room
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, big)
            await trio.sleep(0.05)
            await server.send_all(b"y")
    await server.aclose()
    await client.aclose()


async def test_an_unprepared_listeners_connection_gets_trios_constructor() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with socket.create_connection(listener.getsockname()):
        raw, _ = listener.accept()
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        stream = accepted_stream(trio.socket.from_stdlib_socket(raw))
        assert _options(stream) == (1, 2**14)  # set by trio.SocketStream itself
        await stream.aclose()
    listener.close()
