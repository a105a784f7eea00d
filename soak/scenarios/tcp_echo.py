"""TCP echo through the L4 relay: sessions of 10 echoes of 4 KiB, then a half-close that
must be answered by EOF. `echo_sessions` is shared with the TLS scenario, which differs
in how it connects and ends a session with close_notify (TLS has no half-close)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

from soak.client_errors import ClientError, classify
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 2
RATE_PER_TASK = 10.0
ECHOES_PER_SESSION = 10
PAYLOAD_BYTES = 4096

Connect = Callable[[ClientContext], Awaitable[trio.abc.Stream]]


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise ClientError("eof_early", f"{len(buf)} of {n} bytes echoed")
        buf += data
    return bytes(buf)


async def _tcp(ctx: ClientContext) -> trio.abc.Stream:
    return await trio.open_tcp_stream(ctx.host, ctx.port)


async def echo_sessions(ctx: ClientContext, connect: Connect) -> None:
    async def task(i: int) -> None:
        stream: trio.abc.Stream | None = None
        echoed = 0

        async def close() -> None:
            nonlocal stream
            if stream is not None:
                s, stream = stream, None
                await trio.aclose_forcefully(s)

        async def echo() -> None:
            nonlocal stream, echoed
            with trio.fail_after(10):
                if stream is None:
                    try:
                        stream = await connect(ctx)
                    except OSError as exc:
                        raise ClientError(classify(exc, connecting=True), str(exc))
                    echoed = 0
                payload = os.urandom(PAYLOAD_BYTES)
                await stream.send_all(payload)
                if await _read_exactly(stream, PAYLOAD_BYTES) != payload:
                    raise ClientError("mismatch")
                echoed += 1
                if echoed >= ECHOES_PER_SESSION:
                    if isinstance(stream, trio.abc.HalfCloseableStream):
                        await stream.send_eof()
                        if await stream.receive_some(1):
                            raise ClientError("mismatch", "bytes after the half-close")
                        await close()
                    else:  # TLS: close_notify, then the close
                        s, stream = stream, None
                        await s.aclose()

        await run_paced(ctx, RATE_PER_TASK, echo, close)

    await run_tasks(ctx, ctx.count(TASKS), task)


async def run(ctx: ClientContext) -> None:
    await echo_sessions(ctx, _tcp)


SCENARIO = Scenario(
    name="tcp_echo",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g} echoes/s of {PAYLOAD_BYTES} B, {ECHOES_PER_SESSION} per connection",
    front="tcp",
    backend="tcp",
    run=run,
)
