"""WebSocket echo over H1 Upgrade: sessions of 20 messages (text and binary, up to 16 KiB)
through the gateway to a trio-websocket echo backend, with the `websockets` client.

The `websockets` client is synchronous, so each session loop runs in a thread; every
message is one timed exchange, and its echo must come back identical.
"""

from __future__ import annotations

import os
import random
import time

import trio
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from soak.client_errors import ClientError, classify
from soak.load_loop import run_tasks
from soak.scenario import ClientContext, Scenario

SESSIONS = 2
MESSAGES_PER_SESSION = 20
RATE_PER_SESSION = 10.0


def _session(ctx: ClientContext, rng: random.Random) -> None:
    url = f"ws://{ctx.host}:{ctx.port}/echo"
    try:
        ws = connect(url, open_timeout=10, close_timeout=5, compression=None, max_size=None)
    except InvalidStatus as exc:
        raise ClientError(f"status_{exc.response.status_code}")
    except InvalidHandshake as exc:
        raise ClientError("protocol", str(exc))
    except OSError as exc:
        raise ClientError(classify(exc, connecting=True), str(exc))
    with ws:
        for n in range(MESSAGES_PER_SESSION):
            if time.time() >= ctx.stop_at:
                return
            size = rng.randint(1, 16 * 1024)
            message: str | bytes = os.urandom(size) if n % 2 else "t" * size
            started = time.perf_counter()
            try:
                ws.send(message)
                echo = ws.recv(timeout=10)
            except ConnectionClosed:
                ctx.recorder.error("ws_closed")
                return
            except TimeoutError:
                ctx.recorder.error("timeout")
                return
            if echo != message:
                ctx.recorder.error("mismatch")
                return
            ctx.recorder.ok(time.perf_counter() - started)
            time.sleep(max(0.0, 1 / RATE_PER_SESSION - (time.perf_counter() - started)))


def _sessions(ctx: ClientContext, seed: int) -> None:
    rng = random.Random(seed)
    while time.time() < ctx.stop_at:
        try:
            _session(ctx, rng)
        except ClientError as exc:
            ctx.recorder.error(exc.kind)
            time.sleep(0.2)
        except (ConnectionClosed, OSError) as exc:
            ctx.recorder.error("ws_closed" if isinstance(exc, ConnectionClosed) else classify(exc))
            time.sleep(0.2)


async def run(ctx: ClientContext) -> None:
    async def task(i: int) -> None:
        seed = ctx.rng.randrange(2**32)
        await trio.to_thread.run_sync(_sessions, ctx, seed, abandon_on_cancel=True)

    await run_tasks(ctx, ctx.count(SESSIONS), task)


SCENARIO = Scenario(
    name="ws_echo",
    summary=f"{SESSIONS} WebSocket sessions at a time, {MESSAGES_PER_SESSION} echoes each at {RATE_PER_SESSION:g}/s",
    front="h1",
    backend="ws",
    run=run,
)
