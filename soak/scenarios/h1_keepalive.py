"""H1 keep-alive load: a few long-lived connections, small GETs back to back."""

from __future__ import annotations

from soak.client_errors import ClientError
from soak.h1_client import H1Client
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

CONNECTIONS = 4
RATE_PER_CONNECTION = 10.0


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        client = H1Client(ctx.host, ctx.port, ctx.recorder)

        async def get() -> None:
            answer = await client.request("GET", f"/ka/{i}")
            if answer.status != 200:
                raise ClientError(f"status_{answer.status}")
            if not answer.body_head.startswith(b"backend="):
                raise ClientError("mismatch", repr(answer.body_head))

        await run_paced(ctx, RATE_PER_CONNECTION, get, client.aclose)

    await run_tasks(ctx, ctx.count(CONNECTIONS), task)


SCENARIO = Scenario(
    name="h1_keepalive",
    summary=f"{CONNECTIONS} keep-alive connections x {RATE_PER_CONNECTION:g} GET/s each",
    front="h1",
    backend="http",
    run=run,
)
