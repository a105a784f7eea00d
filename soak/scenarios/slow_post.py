"""Slow POST: a complete head announcing 1 MB, then one body byte every 2 s. The gateway
must end each within its total request timeout (the soak config sets 15 s) with an error
status or a close; one that outlives it by more than `GRACE_S` is `not_reaped`. A reaped
request is the expected outcome and counts as one exchange.
"""

from __future__ import annotations

import time

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

CONNECTIONS = 4
TOTAL_TIMEOUT_S = 15.0
GRACE_S = 5.0


async def _attack_once(ctx: ClientContext) -> None:
    try:
        stream = await trio.open_tcp_stream(ctx.host, ctx.port)
    except OSError as exc:
        raise ClientError(classify(exc, connecting=True), str(exc))
    async with stream:
        deadline = time.monotonic() + TOTAL_TIMEOUT_S + GRACE_S
        try:
            await stream.send_all(
                b"POST /slow-post HTTP/1.1\r\nHost: soak\r\nContent-Length: 1000000\r\n\r\n"
            )
            while time.monotonic() < deadline:
                with trio.move_on_after(2.0):
                    await stream.receive_some(4096)  # an answer (408/504) or a close
                    ctx.recorder.note("slow_post_reaped")
                    return
                await stream.send_all(b"p")
        except (OSError, trio.BrokenResourceError):
            ctx.recorder.note("slow_post_reaped")
            return
    raise ClientError("not_reaped", f"still open after {TOTAL_TIMEOUT_S + GRACE_S:g} s")


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        await run_paced(ctx, 1 / (TOTAL_TIMEOUT_S + GRACE_S + 1), lambda: _attack_once(ctx))

    await run_tasks(ctx, ctx.count(CONNECTIONS), task)


SCENARIO = Scenario(
    name="slow_post",
    summary=f"{CONNECTIONS} POSTs of 1 MB sending one body byte every 2 s",
    front="h1",
    backend="http",
    run=run,
    latency_judged=False,
    listener_tables={
        "http": f"total_timeout_ms = {int(TOTAL_TIMEOUT_S * 1000)}\nbody_timeout_ms = 10000"
    },
)
