"""A synchronous httpx transport speaking HTTP/3 with aioquic's client, so the cell tables
drive an H3 front with the same httpx calls they use for H1 and H2.

One QUIC connection per transport, run by an asyncio loop in a thread of its own. A URL
``http://HOST:PORT/...`` goes to the QUIC listener on UDP HOST:PORT with ``:scheme https``
and ``:authority HOST:PORT`` (the cells put each quic listener on the UDP port of the
cleartext listener that reaches the same backend). Request bodies are uploaded as httpx
yields them, paced by the stream's unacknowledged bytes; a response that ends the upload
early (413, or the server's STOP_SENDING) stops it. Response bodies stream through a queue.
Certificates are not verified (the gateway's test certificate names localhost).
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StopSendingReceived, StreamReset

_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
_UNACKED_MAX = 512 * 1024
_END = object()


class _Response:
    def __init__(self) -> None:
        self.head: list[tuple[bytes, bytes]] | None = None
        self.head_ready = threading.Event()
        self.chunks: queue.Queue[object] = queue.Queue()
        self.ended = False
        self.reset: int | None = None
        self.stop_sending = False

    def fail(self, code: int) -> None:
        self.reset = code
        self.head_ready.set()
        self.chunks.put(_END)


class _H3(H3Connection):
    """aioquic's client checks a response's content-length against its DATA without knowing
    the request method; a HEAD response states the length of the body it does not carry
    (RFC 9110 §9.3.2)."""

    head_streams: set[int]

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id not in self.head_streams:
            super()._check_content_length(stream)


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = _H3(self._quic)
        self.h3.head_streams = set()
        self.responses: dict[int, _Response] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            resp = self.responses.get(event.stream_id)
            if resp is not None and not resp.ended:
                resp.fail(event.error_code)
        if isinstance(event, StopSendingReceived):
            resp = self.responses.get(event.stream_id)
            if resp is not None:
                resp.stop_sending = True
        for ev in self.h3.handle_event(event):
            self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        resp = self.responses.get(getattr(ev, "stream_id", -1))
        if resp is None:
            return
        if isinstance(ev, HeadersReceived):
            status = dict(ev.headers).get(b":status", b"")
            if resp.head is None:
                if status.startswith(b"1"):
                    return  # interim
                resp.head = list(ev.headers)
                resp.head_ready.set()
            # a second HEADERS frame is the trailer section; the tables do not read it here
        elif isinstance(ev, DataReceived) and ev.data:
            resp.chunks.put(ev.data)
        if getattr(ev, "stream_ended", False):
            resp.ended = True
            resp.chunks.put(_END)

    def unacked(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0


class _Body(httpx.SyncByteStream):
    def __init__(self, resp: _Response, timeout_s: float) -> None:
        self.resp = resp
        self.timeout_s = timeout_s

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.resp.chunks.get(timeout=self.timeout_s)
            if item is _END:
                if self.resp.reset is not None and not self.resp.ended:
                    raise httpx.RemoteProtocolError(f"stream reset ({self.resp.reset:#x})")
                return
            assert isinstance(item, bytes)
            yield item


class H3Transport(httpx.BaseTransport):
    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: _Client | None = None
        self._closer: asyncio.Event | None = None
        self._runner: Any = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout_s)

    def _connect(self, host: str, port: int) -> _Client:
        if self.client is not None:
            return self.client
        ready: queue.Queue[object] = queue.Queue()

        async def hold() -> None:
            config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=30.0)
            config.verify_mode = ssl.CERT_NONE
            config.server_name = "localhost"
            self._closer = asyncio.Event()
            try:
                async with connect(host, port, configuration=config, create_protocol=_Client) as c:
                    ready.put(c)
                    await self._closer.wait()
            except BaseException as exc:  # reported to the caller below
                ready.put(exc)

        self._runner = asyncio.run_coroutine_threadsafe(hold(), self.loop)
        got = ready.get(timeout=self.timeout_s)
        if isinstance(got, BaseException):
            raise httpx.ConnectError(f"h3 connect failed: {got!r}")
        assert isinstance(got, _Client)
        self.client = got
        return got

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or 443
        client = self._connect(host, port)
        authority = f"{host}:{port}".encode()
        headers = [
            (b":method", request.method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", url.raw_path),
        ]
        for name, value in request.headers.raw:
            n = name.lower()
            if n in _HOP or n == b"host":
                continue
            headers.append((n, value))
        body = request.stream
        has_body = request.method in ("POST", "PUT", "PATCH") or "content-length" in request.headers
        resp = _Response()

        async def start() -> int:
            sid = client._quic.get_next_available_stream_id()
            client.responses[sid] = resp
            if request.method == "HEAD":
                client.h3.head_streams.add(sid)
            client.h3.send_headers(sid, headers, end_stream=not has_body)
            client.transmit()
            return sid

        sid = self._run(start())
        if has_body:
            assert isinstance(body, httpx.SyncByteStream)

            async def send(chunk: bytes, end: bool) -> bool:
                while client.unacked(sid) > _UNACKED_MAX:
                    if resp.ended or resp.reset is not None or resp.stop_sending:
                        return False
                    await asyncio.sleep(0.002)
                if resp.stop_sending or resp.reset is not None:
                    return False
                try:
                    client.h3.send_data(sid, chunk, end_stream=end)
                except Exception:  # the stream was reset or stopped: the upload is over
                    return False
                client.transmit()
                return True

            for chunk in body:
                if not self._run(send(bytes(chunk), False)):
                    break
            else:
                self._run(send(b"", True))
        if not resp.head_ready.wait(self.timeout_s):
            raise httpx.ReadTimeout("no response head")
        if resp.head is None:
            raise httpx.RemoteProtocolError(f"stream reset ({resp.reset:#x}) before a response")
        status = int(dict(resp.head)[b":status"])
        fields = [(n, v) for n, v in resp.head if not n.startswith(b":")]
        return httpx.Response(
            status,
            headers=fields,
            stream=_Body(resp, self.timeout_s),
            extensions={"http_version": b"HTTP/3"},
        )

    def close(self) -> None:
        if self._closer is not None:
            self.loop.call_soon_threadsafe(self._closer.set)
            try:
                self._runner.result(5)
            except Exception:  # closing: nothing left to report to
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
