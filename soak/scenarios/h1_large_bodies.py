"""H1 large bodies: 2 MiB downloads and 2 MiB uploads in turn, sizes checked end to end."""

from __future__ import annotations

from soak.client_errors import ClientError
from soak.h1_client import H1Client
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 2
RATE_PER_TASK = 0.5
BODY_BYTES = 2 * 1024 * 1024


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        client = H1Client(ctx.host, ctx.port, ctx.recorder, timeout_s=30.0)
        turn = [i]

        async def transfer() -> None:
            turn[0] += 1
            if turn[0] % 2:
                answer = await client.request("GET", f"/bytes/{BODY_BYTES}")
                if answer.status == 200 and answer.body_bytes != BODY_BYTES:
                    raise ClientError("mismatch", f"downloaded {answer.body_bytes} bytes")
            else:
                answer = await client.request("POST", "/upload", body_bytes=BODY_BYTES)
                if answer.status == 200 and not answer.body_head.startswith(
                    f"received={BODY_BYTES}".encode()
                ):
                    raise ClientError("mismatch", repr(answer.body_head))
            if answer.status != 200:
                raise ClientError(f"status_{answer.status}")

        await run_paced(ctx, RATE_PER_TASK, transfer, client.aclose)

    await run_tasks(ctx, ctx.count(TASKS), task)


SCENARIO = Scenario(
    name="h1_large_bodies",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g}/s alternating 2 MiB GET and 2 MiB POST",
    front="h1",
    backend="http",
    run=run,
)
