"""Slowloris: connections that send a request head one header line a second and never
finish it. The gateway must reap each within its header timeout (the soak config sets
5 s); a connection that outlives the timeout by more than `GRACE_S` is `not_reaped`.
A reaped connection is the expected outcome: it counts as one exchange, timed from
connect to reap, and the attacker reconnects.
"""

from __future__ import annotations

import time

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

CONNECTIONS = 8
HEADER_TIMEOUT_S = 5.0
GRACE_S = 3.0


async def _attack_once(ctx: ClientContext) -> None:
    try:
        stream = await trio.open_tcp_stream(ctx.host, ctx.port)
    except OSError as exc:
        raise ClientError(classify(exc, connecting=True), str(exc))
    async with stream:
        deadline = time.monotonic() + HEADER_TIMEOUT_S + GRACE_S
        try:
            await stream.send_all(b"GET /slowloris HTTP/1.1\r\nHost: soak\r\n")
            n = 0
            while time.monotonic() < deadline:
                with trio.move_on_after(1.0):
                    await stream.receive_some(4096)  # a 408 or a close: reaped
                    ctx.recorder.note("slowloris_reaped")
                    return
                n += 1
                await stream.send_all(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
        except (OSError, trio.BrokenResourceError):
            ctx.recorder.note("slowloris_reaped")
            return
    raise ClientError("not_reaped", f"still open after {HEADER_TIMEOUT_S + GRACE_S:g} s")


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        await run_paced(ctx, 1 / (HEADER_TIMEOUT_S + GRACE_S + 1), lambda: _attack_once(ctx))

    await run_tasks(ctx, ctx.count(CONNECTIONS), task)


SCENARIO = Scenario(
    name="slowloris",
    summary=f"{CONNECTIONS} connections sending a header line a second, never ending the head",
    front="h1",
    backend="http",
    run=run,
    latency_judged=False,
    listener_tables={"http": f"header_timeout_ms = {int(HEADER_TIMEOUT_S * 1000)}"},
)
