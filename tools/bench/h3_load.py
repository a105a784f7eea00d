"""The HTTP/3 load generator of `python -m tools.bench h3` (h2load here is built without
QUIC): closed-loop GETs over aioquic's client.

`python -m tools.bench.h3_load PORT --connections C --streams S --duration-s D`: opens C
QUIC connections to UDP 127.0.0.1:PORT (ALPN h3; the certificate is not checked: the
bench's own throw-away one), then keeps S requests in flight on each until D seconds have
passed, a new GET as soon as one completes; the last ones are awaited. Prints one JSON
object: requests that got a 200 with body "ok", failures (any other answer, reset or
error), the seconds from the first request to the last answer, and the first few errors.
The bench runs it in its own process pinned to the harness CPUs, so its CPU is not counted
against the server measured. `check` makes one request (the bench's readiness probe).
Must never: run under pytest, or talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from dataclasses import asdict, dataclass, field

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset

HOST = "127.0.0.1"
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
ERRORS_KEPT = 5


@dataclass
class LoadResult:
    requests: int = 0
    failed: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(why)


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.h3 = H3Connection(self._quic)
        self._waiters: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._status: dict[int, int] = {}
        self._bodies: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            self._finish(event.stream_id, RuntimeError(f"reset {event.error_code:#x}"))
        for ev in self.h3.handle_event(event):
            self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            self._status[ev.stream_id] = int(dict(ev.headers).get(b":status", b"0"))
        elif isinstance(ev, DataReceived):
            self._bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
        else:
            return
        if ev.stream_ended:
            self._finish(ev.stream_id, None)

    def _finish(self, stream_id: int, error: Exception | None) -> None:
        waiter = self._waiters.pop(stream_id, None)
        status = self._status.pop(stream_id, 0)
        body = bytes(self._bodies.pop(stream_id, b""))
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result((status, body))

    async def get(self, authority: bytes) -> tuple[int, bytes]:
        stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority),
                (b":path", b"/"),
            ],
            end_stream=True,
        )
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiters[stream_id] = waiter
        self.transmit()
        return await waiter  # the caller bounds the wait (one timeout per run, not per request)


def _config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=30.0)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    return config


async def _stream_loop(
    client: _Client, authority: bytes, deadline: float, result: LoadResult
) -> None:
    while time.monotonic() < deadline:
        try:
            status, body = await client.get(authority)
        except Exception as exc:  # a failed request is a figure here, not a crash
            result.fail(f"{type(exc).__name__}: {exc}")
            return  # this stream slot stops: the connection may be gone
        if status == 200 and body == b"ok":
            result.requests += 1
        else:
            result.fail(f"status {status} body {body[:40]!r}")


async def run_load(port: int, connections: int, streams: int, duration_s: float) -> LoadResult:
    result = LoadResult()
    authority = f"localhost:{port}".encode()
    ready = asyncio.Event()  # every connection is open
    go = asyncio.Event()  # `start` is set
    start = 0.0

    async def one_connection() -> None:
        async with connect(HOST, port, configuration=_config(), create_protocol=_Client) as client:
            assert isinstance(client, _Client)
            opened.append(client)
            if len(opened) == connections:
                ready.set()
            await go.wait()
            async with asyncio.timeout(duration_s + REQUEST_TIMEOUT_S):
                await asyncio.gather(
                    *(
                        _stream_loop(client, authority, start + duration_s, result)
                        for _ in range(streams)
                    )
                )

    opened: list[_Client] = []
    tasks = [asyncio.create_task(one_connection()) for _ in range(connections)]
    try:
        await asyncio.wait_for(ready.wait(), CONNECT_TIMEOUT_S)
    except TimeoutError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.fail(f"only {len(opened)}/{connections} connections within {CONNECT_TIMEOUT_S}s")
        return result
    start = time.monotonic()
    go.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            result.fail(f"connection: {type(outcome).__name__}: {outcome}")
    result.wall_s = time.monotonic() - start
    return result


async def check(port: int, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One GET over a new connection: (status, body); raises on no answer."""
    async with asyncio.timeout(timeout_s):
        async with connect(HOST, port, configuration=_config(), create_protocol=_Client) as c:
            assert isinstance(c, _Client)
            return await c.get(f"localhost:{port}".encode())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.h3_load")
    p.add_argument("port", type=int)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--duration-s", type=float, default=4.0)
    a = p.parse_args()
    result = asyncio.run(run_load(a.port, a.connections, a.streams, a.duration_s))
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
