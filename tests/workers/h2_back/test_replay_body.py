"""ReplayableBody over a fed body: a rewind replays exactly what was taken and then goes on
with the producer; a body that outgrows the cap is `started` and never replayed."""

from __future__ import annotations

import pytest
import trio
from h2_backends import FedBody

from workers.http.replay_body import ReplayableBody


async def _drain(body: ReplayableBody) -> bytes:
    out = bytearray()
    while chunk := await body.receive():
        out += chunk
    return bytes(out)


async def test_rewind_replays_what_was_taken_then_continues_with_the_producer() -> None:
    inner = FedBody()
    body = ReplayableBody(inner, cap=1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inner.feed, b"a" * 100)
        first = await body.receive()  # an attempt takes one chunk, then is refused
        assert first == b"a" * 100 and not body.started
        body.rewind()
        nursery.start_soon(inner.feed, b"b" * 50)
        assert await body.receive() == b"a" * 100  # replayed
        assert await body.receive() == b"b" * 50  # then the producer again
        await inner.finish([(b"x-t", b"1")])
        assert await body.receive() == b""
    body.rewind()  # a body that ended is replayed whole, trailers included
    assert await _drain(body) == b"a" * 100 + b"b" * 50
    assert body.trailers == [(b"x-t", b"1")] and body.received_bytes == 150


async def test_a_body_past_the_cap_is_started_and_cannot_be_rewound() -> None:
    inner = FedBody()
    body = ReplayableBody(inner, cap=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inner.feed, b"c" * 100)
        assert await body.receive() == b"c" * 100
    assert body.started
    with pytest.raises(RuntimeError):
        body.rewind()
