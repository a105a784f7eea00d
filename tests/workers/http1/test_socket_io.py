"""socket_io against real socket pairs: checkpoints, partial writes, closed sockets."""

from __future__ import annotations

import pytest
import trio

from workers.http1.socket_io import receive_some, send_all, send_now, send_rest


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_receive_with_bytes_ready_is_still_a_checkpoint() -> None:
    a, b = _pair()
    async with a, b:
        await send_all(a, b"ready")
        with trio.CancelScope() as scope:
            scope.cancel()
            await receive_some(b, 100)
        assert scope.cancelled_caught  # a peer that always has bytes cannot outrun a deadline


async def test_receive_without_checkpoint_takes_ready_bytes_without_yielding() -> None:
    a, b = _pair()
    async with a, b:
        await send_all(a, b"ready")
        with trio.CancelScope() as scope:
            scope.cancel()
            assert await receive_some(b, 100, None, checkpoint=False) == b"ready"
        assert not scope.cancelled_caught  # no yield: the caller promised one soon
        with trio.CancelScope() as scope:
            scope.cancel()
            await receive_some(b, 100, None, checkpoint=False)  # nothing ready: it must wait
        assert scope.cancelled_caught


async def test_receive_waits_then_returns_bytes_and_eof() -> None:
    a, b = _pair()
    async with b:
        async with trio.open_nursery() as nursery:

            async def late_send() -> None:
                await trio.sleep(0.05)
                await send_all(a, b"late")
                await a.aclose()

            nursery.start_soon(late_send)
            assert await receive_some(b, 100) == b"late"
            assert await receive_some(b, 100) == b""


async def test_send_beyond_the_socket_buffer_waits_and_delivers_all() -> None:
    a, b = _pair()
    payload = bytes(range(256)) * 16384  # 4 MiB: far over any socket buffer
    received = bytearray()
    async with a, b:
        sent = send_now(a, payload)
        assert 0 < sent < len(payload)
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                while len(received) < len(payload):
                    received.extend(await receive_some(b, 65536))

            nursery.start_soon(drain)
            await send_rest(a, payload, sent)
    assert received == payload


async def test_send_rest_on_a_full_buffer_honours_a_deadline() -> None:
    a, b = _pair()
    async with a, b:
        payload = b"x" * (4 << 20)
        sent = send_now(a, payload)
        with trio.move_on_after(0.1) as scope:
            await send_rest(a, payload, sent)  # nobody reads: must wait, then be cancelled
        assert scope.cancelled_caught


async def test_closed_and_broken_sockets_raise_the_stream_errors() -> None:
    a, b = _pair()
    a.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        send_now(a, b"x")
    with pytest.raises(trio.ClosedResourceError):
        await receive_some(a, 10)
    await b.aclose()
    c, d = _pair()
    await d.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first write may still land in the buffer
            await send_all(c, b"x" * 65536)
    await c.aclose()
