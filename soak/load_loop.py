"""The paced loop every load task runs: one exchange per tick, timed and classified.

Open-loop pacing (the next exchange starts at the next tick, not when the last one ended,
unless it overran) keeps the offered load steady whatever the latency, so throughput and
latency series are comparable across a run. It must never swallow cancellation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import h11
import trio

from soak.client_errors import ClientError, classify
from soak.scenario import ClientContext

Exchange = Callable[[], Awaitable[object]]
Cleanup = Callable[[], Awaitable[None]]


async def run_paced(
    ctx: ClientContext, rate_per_s: float, exchange: Exchange, on_error: Cleanup | None = None
) -> None:
    period = 1.0 / rate_per_s
    next_at = trio.current_time() + ctx.rng.uniform(0, period)  # spread the tasks out
    while True:
        await trio.sleep_until(next_at)
        started = time.perf_counter()
        failed: str | None = None
        try:
            await exchange()
        except (ClientError, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            failed = classify(exc)
        except h11.ProtocolError:
            failed = "protocol"
        except Exception as exc:  # a defect in the client: counted as unexpected, run goes on
            failed = f"client_bug_{type(exc).__name__}"
        if failed is None:
            ctx.recorder.ok(time.perf_counter() - started)
        else:
            ctx.recorder.error(failed)
            if on_error is not None:
                await on_error()
        next_at = max(next_at + period, trio.current_time())


async def run_tasks(ctx: ClientContext, count: int, task: Callable[[int], Awaitable[None]]) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(task, i)
