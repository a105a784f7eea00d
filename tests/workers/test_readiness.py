"""workers.readiness against real socket pairs: wakeups, ready flags, cancellation, close,
fd reuse, one waiter per socket, one instance per trio run."""

from __future__ import annotations

import os
import socket
import time

import pytest
import trio
import trio.testing

from workers.http1.socket_io import forget, receive_some, receive_when_ready, watch
from workers.readiness import _OUTBOX_WAIT_S, Readiness, current_readiness, existing_readiness


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def test_held_writes_go_out_once_the_first_has_waited_its_bound() -> None:
    """A batch holds its writes until it ends, unless the first has waited ``_OUTBOX_WAIT_S``:
    the age is checked when a 17th (33rd, ...) socket's write comes, which then sends what
    was held and is held itself, for the batch's end."""
    readiness = current_readiness()
    pairs = [_pair() for _ in range(17)]
    try:
        for i, (a, _) in enumerate(pairs[:16]):
            assert readiness.write_soon(a.fileno(), b"w%02d" % i) == 3
        for _, b in pairs[:16]:
            with pytest.raises(BlockingIOError):
                b.recv(10)
        time.sleep(_OUTBOX_WAIT_S * 4)
        assert readiness.write_soon(pairs[16][0].fileno(), b"w16") == 3
        for i, (_, b) in enumerate(pairs[:16]):
            assert b.recv(10) == b"w%02d" % i
        with pytest.raises(BlockingIOError):
            pairs[16][1].recv(10)
    finally:
        for a, b in pairs:
            readiness.notify_closing(a.fileno())  # drops what is still held
            a.close()
            b.close()


async def test_a_wait_parks_until_the_peer_writes() -> None:
    readiness = current_readiness()
    a, b = _pair()
    with a, b:
        readiness.register(b.fileno())
        woke_at: list[float] = []

        async def reader() -> None:
            await readiness.wait_readable(b.fileno())
            woke_at.append(trio.current_time())

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.sleep(0.05)
                assert not woke_at  # nothing to read: still parked
                sent_at = trio.current_time()
                a.send(b"x")
        assert woke_at and woke_at[0] >= sent_at
        assert b.recv(10) == b"x"


async def test_an_event_with_no_waiter_makes_the_next_wait_a_checkpoint() -> None:
    readiness = current_readiness()
    a, b = _pair()
    with a, b:
        readiness.register(b.fileno())
        a.send(b"early")
        await trio.sleep(0.05)  # the dispatcher sees the edge while nobody waits
        with trio.move_on_after(1) as scope:
            await readiness.wait_readable(b.fileno())
        assert not scope.cancelled_caught
        # ...and that wait was still a checkpoint: a cancelled scope is honoured there.
        a.send(b"again")
        await trio.sleep(0.05)
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            await readiness.wait_readable(b.fileno())
        assert cancelled.cancelled_caught


async def test_cancelling_a_wait_leaves_no_waiter_behind() -> None:
    readiness = current_readiness()
    a, b = _pair()
    with a, b:
        readiness.register(b.fileno())
        with trio.move_on_after(0.05) as scope:
            await readiness.wait_readable(b.fileno())
        assert scope.cancelled_caught
        # The fd is free for the next wait (no BusyResourceError), which a write wakes.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readiness.wait_readable, b.fileno())
            await trio.sleep(0.02)
            a.send(b"x")


async def test_a_second_waiter_on_one_socket_is_refused() -> None:
    readiness = current_readiness()
    a, b = _pair()
    with a, b:
        readiness.register(b.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readiness.wait_readable, b.fileno())
            await trio.sleep(0.02)
            with pytest.raises(trio.BusyResourceError):
                await readiness.wait_readable(b.fileno())
            nursery.cancel_scope.cancel()


async def test_notify_closing_wakes_the_waiter_with_closed_resource_error() -> None:
    readiness = current_readiness()
    a, b = _pair()
    with a, b:
        readiness.register(b.fileno())
        errors: list[BaseException] = []

        async def reader() -> None:
            try:
                await readiness.wait_readable(b.fileno())
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.02)
            readiness.notify_closing(b.fileno())
        assert len(errors) == 1


async def test_forget_before_close_wakes_a_receive_through_the_stream_api() -> None:
    a, b = trio.socket.socketpair()
    client, server = trio.SocketStream(a), trio.SocketStream(b)
    readiness = watch(server)
    assert readiness is current_readiness()
    outcome: list[BaseException] = []

    async def reader() -> None:
        try:
            await receive_when_ready(server, 100, readiness)
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.02)
            forget(server)
            await trio.aclose_forcefully(server)
    assert len(outcome) == 1


async def test_a_reused_fd_number_is_watched_again() -> None:
    readiness = current_readiness()
    a, b = _pair()
    readiness.register(b.fileno())
    number = b.fileno()
    b.close()  # the kernel drops it from the epoll; the number is free again
    a.close()
    c, d = _pair()
    with c, d:
        if d.fileno() != number:  # make the new socket take the old number
            os.dup2(d.fileno(), number)
            d.close()
            d = socket.socket(fileno=number)
            d.setblocking(False)
        readiness.register(d.fileno())
        with trio.fail_after(2):  # unwatched, the waiter would never wake
            async with trio.open_nursery() as nursery:
                nursery.start_soon(readiness.wait_readable, d.fileno())
                await trio.sleep(0.02)
                c.send(b"x")  # wakes the waiter: the nursery exits
        assert d.recv(10) == b"x"


async def test_peer_close_wakes_a_reader_that_then_reads_eof() -> None:
    a, b = trio.socket.socketpair()
    client, server = trio.SocketStream(a), trio.SocketStream(b)
    readiness = watch(server)
    async with server:
        async with trio.open_nursery() as nursery:

            async def close_later() -> None:
                await trio.sleep(0.02)
                await client.aclose()

            nursery.start_soon(close_later)
            assert await receive_some(server, 100, readiness) == b""


async def test_streams_other_than_plain_tcp_are_not_watched() -> None:
    left, right = trio.testing.memory_stream_pair()
    assert watch(left) is None
    await right.send_all(b"mem")
    assert await receive_some(left, 10, None) == b"mem"


def test_each_trio_run_has_its_own_readiness_and_closes_its_epoll() -> None:
    seen: list[Readiness] = []

    async def once() -> None:
        assert existing_readiness() is None  # never made implicitly
        seen.append(current_readiness())
        assert current_readiness() is seen[-1]
        await trio.sleep(0)

    trio.run(once)
    trio.run(once)
    assert seen[0] is not seen[1]
    for readiness in seen:
        with pytest.raises(ValueError):  # the dispatcher closed it when its run ended
            readiness.register(0)
