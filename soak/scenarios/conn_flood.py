"""Connection flood: bursts of connections that write half a request line ("GET / HT") or
nothing and close at once. Each connect that succeeds is one exchange; the point is that
the gateway's fds, memory and the other scenarios stay untouched by the churn.
"""

from __future__ import annotations

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 4
BURST = 10
BURSTS_PER_S = 1.0


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        async def burst() -> None:
            for n in range(BURST):
                try:
                    stream = await trio.open_tcp_stream(ctx.host, ctx.port)
                except OSError as exc:
                    raise ClientError(classify(exc, connecting=True), str(exc))
                try:
                    if n % 2:
                        await stream.send_all(b"GET / HT")
                except (OSError, trio.BrokenResourceError):
                    pass  # the gateway may close first; the close is all that matters
                finally:
                    await stream.aclose()

        await run_paced(ctx, BURSTS_PER_S, burst)

    await run_tasks(ctx, ctx.count(TASKS), task)


SCENARIO = Scenario(
    name="conn_flood",
    summary=f"{TASKS} tasks x {BURSTS_PER_S:g} bursts/s of {BURST} connect-and-abandon",
    front="h1",
    backend="http",
    run=run,
)
