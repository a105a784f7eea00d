"""A keep-alive HTTP/1.1 client connection on h11 and trio: the load clients' H1 peer.

Owns one connection at a time to one address, reconnecting when the server closed the last
one. A request that fails before any answer byte on a *reused* connection is retried once on
a fresh one, as RFC 9112 §9.3.1 allows for idempotent requests and as every real client
does (the server may close an idle keep-alive connection just as we send); the retry is
counted, not hidden. It must never retry a request that had started to get its answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio

from soak.client_errors import ClientError, classify
from soak.recorder import Recorder

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body_bytes: int
    body_head: bytes  # the first bytes of the body, for content checks


class _Stale(Exception):
    """The reused connection closed before answering."""


class H1Client:
    def __init__(self, host: str, port: int, recorder: Recorder, timeout_s: float = 10.0):
        self.host, self.port, self.recorder, self.timeout_s = host, port, recorder, timeout_s
        self.stream: trio.SocketStream | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self.served = 0

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()

    async def _connect(self) -> None:
        await self.aclose()
        try:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ClientError(classify(exc, connecting=True), str(exc))
        self.conn = h11.Connection(h11.CLIENT)
        self.served = 0

    async def request(
        self, method: str, target: str, body_bytes: int = 0, *, close: bool = False
    ) -> Answer:
        with trio.fail_after(self.timeout_s):
            if self.stream is None or self.conn.our_state is not h11.IDLE:
                await self._connect()
            try:
                return await self._exchange(method, target, body_bytes, close)
            except _Stale:
                self.recorder.note("stale_keepalive_retry")
                await self._connect()
                try:
                    return await self._exchange(method, target, body_bytes, close)
                except _Stale:
                    raise ClientError("eof_early", "fresh connection closed before answering")

    async def _exchange(self, method: str, target: str, body_bytes: int, close: bool) -> Answer:
        assert self.stream is not None
        stream, conn = self.stream, self.conn
        reused = self.served > 0
        headers = [("host", f"{self.host}:{self.port}")]
        if body_bytes:
            headers.append(("content-length", str(body_bytes)))
        if close:
            headers.append(("connection", "close"))
        got_bytes = False
        try:
            await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers)) or b"")  # fmt: skip
            left = body_bytes
            while left > 0:
                n = min(left, CHUNK_BYTES)
                await stream.send_all(conn.send(h11.Data(data=b"u" * n)) or b"")
                left -= n
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            status, size, head = 0, 0, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(CHUNK_BYTES)
                    if data:
                        got_bytes = True
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    if len(head) < 64:
                        head += bytes(event.data[: 64 - len(head)])
                    size += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("closed")
        except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
            await self.aclose()
            if reused and not got_bytes:
                raise _Stale()
            kind = "eof_early" if isinstance(exc, h11.RemoteProtocolError) else classify(exc)
            raise ClientError(kind, str(exc))
        self.served += 1
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self.aclose()
        else:
            conn.start_next_cycle()
        return Answer(status, size, head)
