"""A deliberate leak, for proving the verdict can fail: a TCP client that opens a connection
through the relay ten times a second and never closes one, up to `HOLD_MAX`. Each held
connection costs the gateway two fds (client side and backend side), so the gateway's fd
series must come out DRIFT. Never in a default run; name it with `--scenario fd_leak`.
"""

from __future__ import annotations

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced
from soak.scenario import ClientContext, Scenario

RATE_PER_S = 10.0
HOLD_MAX = 2000


async def run(ctx: ClientContext) -> None:
    held: list[trio.SocketStream] = []

    async def open_one() -> None:
        if len(held) >= HOLD_MAX:
            return
        try:
            stream = await trio.open_tcp_stream(ctx.host, ctx.port)
        except OSError as exc:
            raise ClientError(classify(exc, connecting=True), str(exc))
        await stream.send_all(b"x")  # so the relay dials its backend
        held.append(stream)

    await run_paced(ctx, RATE_PER_S * ctx.scale, open_one)


SCENARIO = Scenario(
    name="fd_leak",
    summary=f"opens {RATE_PER_S:g} TCP connections/s through the relay and never closes them",
    front="tcp",
    backend="tcp",
    run=run,
    default=False,
)
