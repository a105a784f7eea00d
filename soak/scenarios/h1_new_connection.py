"""H1 new-connection load: every GET on a fresh connection that the client closes."""

from __future__ import annotations

from soak.client_errors import ClientError
from soak.h1_client import H1Client
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 2
RATE_PER_TASK = 5.0


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        async def get() -> None:
            client = H1Client(ctx.host, ctx.port, ctx.recorder)
            try:
                answer = await client.request("GET", f"/new/{i}", close=True)
            finally:
                await client.aclose()
            if answer.status != 200:
                raise ClientError(f"status_{answer.status}")
            if not answer.body_head.startswith(b"backend="):
                raise ClientError("mismatch", repr(answer.body_head))

        await run_paced(ctx, RATE_PER_TASK, get)

    await run_tasks(ctx, ctx.count(TASKS), task)


SCENARIO = Scenario(
    name="h1_new_connection",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g} GET/s, one connection per request",
    front="h1",
    backend="http",
    run=run,
)
