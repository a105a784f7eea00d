"""The pool's last desync guard with a real backend socket: an idle connection that received
bytes or EOF is never handed out again, whether its reader watches it through
workers.readiness (the event flag, confirmed by poll) or not (poll alone)."""

from __future__ import annotations

import os

import trio
import trio.testing

from gateway.http.limits import HttpLimits, PoolLimits
from workers.http1.backend import Backend
from workers.http1.message_reader import END, MessageReader
from workers.http1.pool import UpstreamConn, UpstreamPool

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _backend(nursery: trio.Nursery) -> tuple[Backend, list[trio.SocketStream]]:
    accepted: list[trio.SocketStream] = []

    async def serve(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    port = listeners[0].socket.getsockname()[1]
    return Backend("b0", "127.0.0.1", port), accepted


async def _one_exchange(
    pool: UpstreamPool, backend: Backend, accepted: list[trio.SocketStream], *, watched: bool
) -> UpstreamConn:
    conn = await pool.acquire(backend)
    if watched:
        conn.reader = MessageReader(conn.stream, HttpLimits(), is_request=False)
    await conn.stream.send_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
    with trio.fail_after(2):
        while not accepted:
            await trio.sleep(0.001)
        await accepted[-1].send_all(RESPONSE)
        if conn.reader is not None:
            while (await conn.reader.next_event())[0] != END:
                pass
        else:
            got = b""
            while len(got) < len(RESPONSE):
                got += await conn.stream.receive_some(100)
    assert pool.keep(conn, reusable=True)
    return conn


async def test_stray_bytes_on_a_watched_idle_connection_refuse_its_reuse(
    nursery: trio.Nursery,
) -> None:
    backend, accepted = await _backend(nursery)
    pool = UpstreamPool(PoolLimits())
    conn = await _one_exchange(pool, backend, accepted, watched=True)
    await accepted[-1].send_all(b"HTTP/1.1 200 OK\r\n")  # a second, unrequested response
    await trio.sleep(0.05)
    assert pool.take_idle(backend) is None
    fresh = await pool.acquire(backend)
    assert fresh is not conn and not fresh.reused


async def test_eof_on_a_watched_idle_connection_refuses_its_reuse(nursery: trio.Nursery) -> None:
    backend, accepted = await _backend(nursery)
    pool = UpstreamPool(PoolLimits())
    await _one_exchange(pool, backend, accepted, watched=True)
    await accepted[-1].aclose()  # the backend's keep-alive timeout
    await trio.sleep(0.05)
    assert pool.take_idle(backend) is None


async def test_a_quiet_watched_connection_is_reused(nursery: trio.Nursery) -> None:
    backend, accepted = await _backend(nursery)
    pool = UpstreamPool(PoolLimits())
    conn = await _one_exchange(pool, backend, accepted, watched=True)
    await trio.sleep(0.05)
    assert pool.take_idle(backend) is conn and conn.reused


async def test_a_stale_flag_does_not_cost_a_good_connection(nursery: trio.Nursery) -> None:
    backend, accepted = await _backend(nursery)
    pool = UpstreamPool(PoolLimits())
    conn = await _one_exchange(pool, backend, accepted, watched=True)
    await accepted[-1].send_all(b"x")
    await trio.sleep(0.05)  # the dispatcher flags the fd: nobody was waiting
    assert conn.reader is not None and conn.reader.readiness is not None
    fd = conn.stream.socket.fileno()  # type: ignore[attr-defined]
    assert conn.reader.readiness.flagged(fd)
    assert os.read(fd, 10) == b"x"  # ...and the byte is gone again
    assert pool.take_idle(backend) is conn  # poll confirms nothing is waiting
    assert not conn.reader.readiness.flagged(fd)


async def test_stray_bytes_on_an_unwatched_idle_connection_refuse_its_reuse(
    nursery: trio.Nursery,
) -> None:
    backend, accepted = await _backend(nursery)
    pool = UpstreamPool(PoolLimits())
    await _one_exchange(pool, backend, accepted, watched=False)
    await accepted[-1].send_all(b"junk")
    assert pool.take_idle(backend) is None  # poll sees it at once, no event loop needed


async def test_tunnel_slots_are_a_budget_of_their_own() -> None:
    async def connect(backend: Backend) -> trio.abc.Stream:
        return trio.testing.memory_stream_pair()[0]

    pool = UpstreamPool(PoolLimits(max_per_backend=1, max_tunnels_per_backend=1), connect)
    b = Backend("b0", "127.0.0.1", 1)
    upload = await pool.acquire(b, tunnel=True)
    ordinary = await pool.acquire(b)  # the tunnel did not take the only ordinary slot
    assert (upload.tunnel, ordinary.tunnel) == (True, False)
    assert not pool.keep(upload, reusable=True)  # no ordinary slot free: it cannot rejoin
    await pool.discard(upload)
    assert pool.keep(ordinary, reusable=True)
    moved = pool.take_idle(b, tunnel=True)  # an idle connection's slot moves to the tunnels
    assert moved is ordinary and moved.tunnel
    assert pool.keep(moved, reusable=True) and not moved.tunnel  # and back on return
    slots = pool._slots[b.key]
    assert (slots.limiter.value, slots.tunnel_limiter.value, pool.open_count(b)) == (0, 1, 1)
