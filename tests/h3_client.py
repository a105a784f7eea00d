"""An HTTP/3 client for tests (aioquic in the client role) and issue 14's long-lived client:
a request every 100 ms on one connection while an operator thread reloads and drains the
gateway, retrying once on a new connection what the gateway refused unprocessed.

Shared by tests/http_cells/test_h3_front.py (no BPF) and tests/kernel/test_quic_steering_netns.py
(the kernel datapath steering by connection ID), so both judge the same client the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic._buffer import Buffer, BufferReadError
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)

GOAWAY_REJECTS_NOTHING = (1 << 62) - 4


def goaways_in(control: bytes) -> list[int]:
    """The GOAWAY ids on a server's control stream (aioquic's H3 layer discards them)."""
    buf = Buffer(data=control)
    found: list[int] = []
    try:
        if buf.pull_uint_var() != 0:  # stream type 0x00: control (RFC 9114 §6.2.1)
            return []
        while not buf.eof():
            frame_type = buf.pull_uint_var()
            payload = buf.pull_bytes(buf.pull_uint_var())
            if frame_type == FrameType.GOAWAY:
                found.append(Buffer(data=payload).pull_uint_var())
    except BufferReadError:
        pass  # a frame still on its way
    return found


class StreamWasReset(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"stream reset {code:#x}")
        self.code = code


class Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.uni: dict[int, bytes] = {}
        self.waiters: dict[int, asyncio.Future[tuple[int, bytes, dict[bytes, bytes]]]] = {}
        self.parts: dict[int, dict[str, Any]] = {}
        self.closed: ConnectionTerminated | None = None
        self.handshake: HandshakeCompleted | None = None

    @property
    def goaways(self) -> list[int]:
        return [g for data in self.uni.values() for g in goaways_in(data)]

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            self.uni[event.stream_id] = self.uni.get(event.stream_id, b"") + event.data
        if isinstance(event, StreamReset):
            waiter = self.waiters.get(event.stream_id)
            if waiter is not None and not waiter.done():
                waiter.set_exception(StreamWasReset(event.error_code))
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        if isinstance(event, ConnectionTerminated):
            self.closed = event
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed {event.error_code:#x}"))
        for ev in self.h3.handle_event(event):
            self._h3(ev)

    def _h3(self, ev: H3Event) -> None:
        part = self.parts.setdefault(getattr(ev, "stream_id", -1), {"body": b"", "trailers": {}})
        if isinstance(ev, HeadersReceived):
            if "status" in part:
                part["trailers"] = dict(ev.headers)
            else:
                part["status"] = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, DataReceived):
            part["body"] += ev.data
        waiter = self.waiters.get(getattr(ev, "stream_id", -1))
        if getattr(ev, "stream_ended", False) and waiter is not None and not waiter.done():
            waiter.set_result((part.get("status", 0), part["body"], part["trailers"]))

    async def request(
        self,
        authority: str,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        method: bytes = b"GET",
        timeout_s: float = 15.0,
    ) -> tuple[int, bytes, dict[bytes, bytes]]:
        if self.closed is not None:  # as a browser would: never send on a closed connection
            raise ConnectionError(f"closed {self.closed.error_code:#x}")
        sid = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.h3.send_headers(sid, fields, end_stream=True)
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[sid] = waiter
        self.transmit()
        return await asyncio.wait_for(waiter, timeout_s)


def client_config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=20.0)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    return config


@dataclass
class LongLivedRun:
    """What the long-lived client saw: (request, connection, time) per served request."""

    served: list[tuple[int, int, float]] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ops: list[tuple[str, int, float]] = field(default_factory=list)


def request_every_100ms(
    host: str, port: int, operate: Callable[[LongLivedRun], None], *, path: str = "/headers"
) -> LongLivedRun:
    """Request `path?reload-N` every 100 ms; `operate` (run on a thread from the fourth
    request on) appends its operations to `run.ops`; stop 4 s after it returned (past a
    3 s drain budget). A request refused unprocessed (H3_REQUEST_REJECTED), cut by a
    graceful close or unanswered in 5 s is retried once on a new connection."""
    run = LongLivedRun()
    authority = f"{host}:{port}"

    async def main() -> None:
        stack = contextlib.AsyncExitStack()
        conns: list[Client] = []

        async def open_connection() -> Client:
            c = await stack.enter_async_context(
                connect(host, port, configuration=client_config(), create_protocol=Client)
            )
            assert isinstance(c, Client)
            conns.append(c)
            return c

        async with stack:
            current = await open_connection()
            operator = threading.Thread(target=operate, args=(run,))
            ends_at: float | None = None
            i = 0
            while ends_at is None or time.monotonic() < ends_at:
                if i == 3:
                    operator.start()
                if ends_at is None and operator.ident is not None and not operator.is_alive():
                    ends_at = time.monotonic() + 4.0  # past the last drain budget (3 s)
                assert i < 600, "the operations did not finish"
                for attempt in (1, 2):
                    try:
                        status, _, _ = await current.request(
                            authority, f"{path}?reload-{i}", timeout_s=5.0
                        )
                    except (TimeoutError, StreamWasReset, ConnectionError) as exc:
                        if attempt == 2:
                            run.failed.append(f"{i}: {exc!r}")
                            break
                        run.retried.append(f"{i}: {str(exc) or 'no answer in 5 s'}")
                        current = await open_connection()
                        continue
                    if status != 200:
                        run.failed.append(f"{i}: status {status}")
                    run.served.append((i, len(conns) - 1, time.monotonic()))
                    break
                i += 1
                await asyncio.sleep(0.1)
            operator.join(30)

    asyncio.run(asyncio.wait_for(main(), 120))
    return run


def check_long_lived(
    run: LongLivedRun, access_events: Callable[[], list[dict[str, Any]]], path: str = "/headers"
) -> None:
    """No request failed; retries only as issue 14 allows; the first connection was served
    by one worker past the first operation; the last by a newer generation."""
    assert not run.failed, (run.failed, run.retried)
    # Refused unprocessed (H3_REQUEST_REJECTED) or cut by the graceful close, as the issue
    # allows; never a request left without an answer (the reloads come faster than the drain
    # budget: a draining generation keeps its budget when the next reload starts).
    retried = run.retried
    assert all("0x10b" in r or "closed 0x100" in r for r in retried), retried
    first_op_done = run.ops[0][2]
    assert any(conn == 0 and t > first_op_done for _, conn, t in run.served), run.served
    prefix = f"{path}?reload-"

    def by_request() -> dict[int, dict[str, Any]]:
        return {
            int(str(e["path"]).rsplit("-", 1)[1]): e
            for e in access_events()
            if str(e.get("path", "")).startswith(prefix)
        }

    found = by_request()
    deadline = time.monotonic() + 10  # lines wait in the workers' buffers for a moment
    while len(found) < len(run.served) and time.monotonic() < deadline:
        time.sleep(0.3)
        found = by_request()
    assert len(found) == len(run.served), (len(found), len(run.served))
    first = [found[i] for i, conn, _ in run.served if conn == 0]
    last_conn = run.served[-1][1]
    last = [found[i] for i, conn, _ in run.served if conn == last_conn]
    assert len({e["pid"] for e in first}) == 1, first  # one owner for the connection's life
    assert last_conn > 0 and last[0]["generation"] > first[0]["generation"], (first[0], last[0])
    print(f"served {len(run.served)} on {last_conn + 1} connections; retried: {retried}")
