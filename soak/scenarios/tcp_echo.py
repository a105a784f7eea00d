"""TCP echo through the L4 relay: sessions of 10 echoes of 4 KiB, then a half-close that
must be answered by EOF."""

from __future__ import annotations

import os

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 2
RATE_PER_TASK = 10.0
ECHOES_PER_SESSION = 10
PAYLOAD_BYTES = 4096


async def _read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise ClientError("eof_early", f"{len(buf)} of {n} bytes echoed")
        buf += data
    return bytes(buf)


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        state: dict[str, trio.SocketStream | int | None] = {"stream": None, "n": 0}

        async def close() -> None:
            stream = state["stream"]
            state["stream"] = None
            if isinstance(stream, trio.SocketStream):
                await stream.aclose()

        async def echo() -> None:
            with trio.fail_after(10):
                if state["stream"] is None:
                    try:
                        state["stream"] = await trio.open_tcp_stream(ctx.host, ctx.port)
                    except OSError as exc:
                        raise ClientError(classify(exc, connecting=True), str(exc))
                    state["n"] = 0
                stream = state["stream"]
                assert isinstance(stream, trio.SocketStream)
                payload = os.urandom(PAYLOAD_BYTES)
                await stream.send_all(payload)
                if await _read_exactly(stream, PAYLOAD_BYTES) != payload:
                    raise ClientError("mismatch")
                state["n"] = int(state["n"] or 0) + 1
                if state["n"] >= ECHOES_PER_SESSION:
                    await stream.send_eof()
                    if await stream.receive_some(1):
                        raise ClientError("mismatch", "bytes after the half-close")
                    await close()

        await run_paced(ctx, RATE_PER_TASK, echo, close)

    await run_tasks(ctx, ctx.count(TASKS), task)


SCENARIO = Scenario(
    name="tcp_echo",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g} echoes/s of {PAYLOAD_BYTES} B, {ECHOES_PER_SESSION} per connection",
    front="tcp",
    backend="tcp",
    run=run,
)
