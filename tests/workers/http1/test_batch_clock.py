"""The connection clock (``exchange_steps.clock_now``): trio's time, read once per dispatcher
batch for the code the batch runs, and the request durations measured with it."""

from __future__ import annotations

import time

import trio

from tests.workers.http1.h1_peers import H11Client, start_backend, start_proxy
from workers.http1.exchange_steps import SystemTime, clock_now
from workers.readiness import DRIVING, current_readiness


async def test_the_clock_is_trios_outside_a_batch_and_the_batch_start_inside() -> None:
    now = clock_now()
    assert isinstance(now, SystemTime)
    before = trio.current_time()
    reading = now()
    assert before <= reading <= trio.current_time()
    readiness = current_readiness()
    DRIVING.batch, DRIVING.batch_at = readiness, time.perf_counter() - 5.0
    try:
        inside = now()
        time.sleep(0.01)
        assert now() == inside  # one reading for the whole batch
    finally:
        DRIVING.batch = None
    assert trio.current_time() - inside >= 5.0  # the batch's start, not the time now
    assert now() - reading >= 0.01


async def test_a_request_duration_spans_the_backends_delay(nursery: trio.Nursery) -> None:
    async def slow(peer, req) -> None:  # type: ignore[no-untyped-def]
        await trio.sleep(0.2)
        await peer.respond(200, b"late")

    backend = await start_backend(nursery, slow)
    proxy = await start_proxy(nursery, [backend])
    client = await H11Client.open(proxy.port)
    for i in range(3):
        if i:
            await trio.sleep(0.3)  # idle between requests: not part of the next one's time
        started = time.perf_counter()
        response, body, _ = await client.request(b"GET", b"/slow")
        took = time.perf_counter() - started
        assert response.status_code == 200 and body == b"late"
        record = proxy.records[-1]
        # From its first bytes (not from the keep-alive wait before them) to the batch that
        # wrote the answer: never longer than the client saw it, and short of the
        # backend's 200 ms by less than a batch.
        assert 0.2 - 0.005 <= record.duration_s <= took
    await client.aclose()
