"""HTTP/2 load: a few connections (prior knowledge on an h1 listener), several concurrent
streams on each, small GETs to an HTTP/1.1 backend (the H2 -> H1 cell)."""

from __future__ import annotations

from soak.client_errors import ClientError
from soak.h2_client import H2Client
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

CONNECTIONS = 2
STREAMS_PER_CONNECTION = 4
RATE_PER_STREAM = 5.0


async def run(ctx: ClientContext) -> None:
    clients = [H2Client(ctx.host, ctx.port, ctx.recorder) for _ in range(ctx.count(CONNECTIONS))]

    async def task(i: int) -> None:
        client = clients[i % len(clients)]

        async def get() -> None:
            answer = await client.get(f"/h2/{i}")
            if answer.status != 200:
                raise ClientError(f"status_{answer.status}")
            if not answer.body_head.startswith(b"backend="):
                raise ClientError("mismatch", repr(answer.body_head))

        await run_paced(ctx, RATE_PER_STREAM, get)

    await run_tasks(ctx, len(clients) * STREAMS_PER_CONNECTION, task)


SCENARIO = Scenario(
    name="h2_multiplexed",
    summary=(
        f"{CONNECTIONS} HTTP/2 connections x {STREAMS_PER_CONNECTION} streams x "
        f"{RATE_PER_STREAM:g} GET/s each (to an HTTP/1.1 backend)"
    ),
    front="h1",
    backend="http",
    run=run,
)
