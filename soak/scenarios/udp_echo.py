"""UDP echo through the datagram proxy: sessions (one client socket each) of 5 datagrams,
every reply awaited for 2 s and compared."""

from __future__ import annotations

import os

import trio

from soak.client_errors import ClientError
from soak.load_loop import run_paced, run_tasks
from soak.scenario import ClientContext, Scenario

TASKS = 2
RATE_PER_TASK = 10.0
DATAGRAMS_PER_SESSION = 5
PAYLOAD_BYTES = 512
REPLY_TIMEOUT_S = 2.0


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        state: dict[str, object] = {"sock": None, "n": 0}

        def close() -> None:
            sock = state["sock"]
            state["sock"] = None
            if isinstance(sock, trio.socket.SocketType):
                sock.close()

        async def on_error() -> None:
            close()

        async def echo() -> None:
            if state["sock"] is None:
                sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                await sock.connect((ctx.host, ctx.port))
                state["sock"], state["n"] = sock, 0
            sock = state["sock"]
            assert isinstance(sock, trio.socket.SocketType)
            payload = os.urandom(PAYLOAD_BYTES)
            await sock.send(payload)
            with trio.move_on_after(REPLY_TIMEOUT_S):
                while True:
                    try:
                        reply = await sock.recv(65535)
                    except ConnectionRefusedError:  # ICMP from a gateway not listening
                        raise ClientError("connect_refused")
                    if reply == payload:
                        break
                    # a late reply to an earlier datagram of this session: not ours
                state["n"] = int(state["n"]) + 1  # type: ignore[call-overload]
                if state["n"] >= DATAGRAMS_PER_SESSION:
                    close()
                return
            raise ClientError("udp_lost")

        await run_paced(ctx, RATE_PER_TASK, echo, on_error)

    await run_tasks(ctx, ctx.count(TASKS), task)


SCENARIO = Scenario(
    name="udp_echo",
    summary=f"{TASKS} tasks x {RATE_PER_TASK:g} datagrams/s of {PAYLOAD_BYTES} B, {DATAGRAMS_PER_SESSION} per session",
    front="udp",
    backend="udp",
    run=run,
    listener_tables={"udp": "session_idle_timeout_ms = 3000"},
)
