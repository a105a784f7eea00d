"""HTTP/2 backends for the h2 back adapter's tests: hypercorn (a real ASGI server, h2c and
TLS), nginx (``http2`` on a TLS listen) and a raw h2 server scripted per test.

Owns: the ASGI app the hypercorn tests call, starting hypercorn in the test's nursery,
nginx's h2 config, the raw server (one h2 connection per accepted socket, a per-test
``on_request`` script, and a record of what it received: trailers, RST_STREAM codes), and
the test-side exchange helpers. Must never listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from running_gateway import wait_for_port

from gateway.config.plan import BackendPlan
from gateway.config.schema import BackendTlsConfig
from gateway.http.errors import HttpError
from gateway.http.limits import BODY_CHUNK_MAX_BYTES, HttpLimits
from gateway.http.model import HeaderList, RequestHead
from tools.ports import free_port
from workers.http.body import BodySource
from workers.http.h2_back import H2Back
from workers.http.h2_dial import h2_connect
from workers.http1.backend import Backend

MIB = 1 << 20
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# --- hypercorn ----------------------------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/echo":
        total = 0
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        start["headers"] = [(b"x-received-bytes", str(total).encode())]
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/duplex":
        # Streams the request body back while it still arrives (full duplex).
        await send(start)
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            await send(
                {"type": "http.response.body", "body": message.get("body", b""), "more_body": more}
            )
        return
    if path == "/trailers":
        start["trailers"] = True
        await send(start)
        await send({"type": "http.response.body", "body": b"with trailers", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})
        return
    if path.startswith("/big/"):
        size = int(path.rsplit("/", 1)[1]) * MIB
        start["headers"] = [(b"content-length", str(size).encode())]
        await send(start)
        block = b"x" * (256 * 1024)
        for _ in range(size // len(block)):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/slow":
        await trio.sleep(0.3)
    if path.startswith("/status/"):
        start["status"] = int(path.rsplit("/", 1)[1])
    start["headers"] = [
        (b"x-path", path.encode()),
        (b"x-http-version", scope["http_version"].encode()),
    ]
    await send(start)
    await send({"type": "http.response.body", "body": b"hello " + path.encode()})


@asynccontextmanager
async def hypercorn_backend(
    *, certs: Any = None, max_streams: int = 100, alpn: list[str] | None = None
) -> AsyncIterator[int]:
    """hypercorn serving ``asgi_app`` on a fresh port: h2c prior knowledge (and HTTP/1.1),
    or TLS with ``certs`` (ALPN h2 + http/1.1 unless ``alpn``)."""
    port = free_port()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.h2_max_concurrent_streams = max_streams
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    if certs is not None:
        config.certfile = str(certs.cert)
        config.keyfile = str(certs.key)
    if alpn is not None:
        config.alpn_protocols = alpn
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: hypercorn_serve(
                asgi_app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        try:
            yield port
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 1


# --- nginx ---------------------------------------------------------------------------------


class NginxH2Backend:
    """nginx answering HTTP/2 over TLS (``listen ... ssl http2``: nginx 1.22) from fixed
    locations."""

    def __init__(self, prefix: Path, certs: Any) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.port = free_port()
        (prefix / "big.bin").write_bytes(b"n" * (3 * MIB))
        self.config = prefix / "nginx.conf"
        self.config.write_text(
            f"""user root;
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix / "client_body"};
    proxy_temp_path {prefix / "proxy"};
    fastcgi_temp_path {prefix / "fastcgi"};
    uwsgi_temp_path {prefix / "uwsgi"};
    scgi_temp_path {prefix / "scgi"};
    http2_max_concurrent_streams 4;
    server {{
        listen 127.0.0.1:{self.port} ssl http2;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        location = /hello {{ add_header x-served-by nginx; return 200 "nginx over h2 $server_protocol"; }}
        location = /big.bin {{ root {prefix}; }}
    }}
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxH2Backend:
        argv = [NGINX, "-p", str(self.prefix), "-e", str(self.prefix / "error.log")]
        self.proc = subprocess.Popen(
            [*argv, "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.prefix / 'error.log').read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- a raw h2 server ------------------------------------------------------------------------


@dataclass
class RawStream:
    id: int
    headers: HeaderList
    body: bytearray = field(default_factory=bytearray)
    trailers: HeaderList = field(default_factory=list)
    ended: bool = False


@dataclass
class RawServerRecord:
    resets: list[tuple[int, int]] = field(default_factory=list)  # (stream id, error code)
    streams: list[RawStream] = field(default_factory=list)
    connections: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class RawConn:
    """The server side of one connection, for scripts: h2 state plus a send helper."""

    def __init__(self, stream: trio.SocketStream, record: RawServerRecord, index: int) -> None:
        self.stream = stream
        self.record = record
        self.index = index  # 1 for the first connection accepted
        self.streams: dict[int, RawStream] = {}
        self.frozen = False  # a script sets it: the server stops reading (a hung backend)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.lock = trio.Lock()

    async def flush(self, raw: bytes = b"") -> None:
        async with self.lock:
            data = self.h2.data_to_send() + raw
            if data:
                await self.stream.send_all(data)

    async def respond(
        self, stream_id: int, body: bytes = b"ok", *, end: bool = True, status: bytes = b"200"
    ) -> None:
        self.h2.send_headers(stream_id, [(b":status", status)])
        if body or end:
            self.h2.send_data(stream_id, body, end_stream=end)
        await self.flush()


# A script runs once per request, in its connection's nursery, when the request's END_STREAM
# arrived (or on its HEADERS with ``on_headers``).
Script = Callable[[RawConn, RawStream], Awaitable[None]]


@asynccontextmanager
async def raw_h2_server(
    script: Script, *, max_streams: int = 100, on_headers: bool = False, ack_data: bool = True
) -> AsyncIterator[tuple[int, RawServerRecord]]:
    record = RawServerRecord()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handle(sock: trio.SocketStream) -> None:
        record.connections += 1
        conn = RawConn(sock, record, record.connections)
        # initial_values: sent in the first SETTINGS (a setter would only queue a change).
        conn.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        conn.h2.initiate_connection()
        await conn.flush()
        async with trio.open_nursery() as nursery:
            while True:
                if conn.frozen:
                    await trio.sleep_forever()
                try:
                    data = await sock.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the peer, or a script, closed it
                if not data:
                    break
                try:
                    events = conn.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        rs = RawStream(event.stream_id, list(event.headers))
                        conn.streams[event.stream_id] = rs
                        record.streams.append(rs)
                        if on_headers:
                            nursery.start_soon(script, conn, rs)
                    elif isinstance(event, h2.events.DataReceived):
                        rs = conn.streams[event.stream_id]
                        rs.body += event.data
                        if ack_data:
                            conn.h2.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.TrailersReceived):
                        conn.streams[event.stream_id].trailers = list(event.headers)
                    elif isinstance(event, h2.events.StreamEnded):
                        rs = conn.streams[event.stream_id]
                        rs.ended = True
                        if not on_headers:
                            nursery.start_soon(script, conn, rs)
                    elif isinstance(event, h2.events.StreamReset):
                        record.resets.append((event.stream_id, int(event.error_code)))
                record.notify()
                await conn.flush()
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield port, record
        finally:
            nursery.cancel_scope.cancel()


# --- request bodies -----------------------------------------------------------------------


class _End:
    def __init__(self, trailers: HeaderList) -> None:
        self.trailers = trailers


class FedBody(BodySource):
    """A request body a test task feeds through a small channel (a front's body source in
    miniature): ``feed`` waits while 8 chunks are queued, ``finish`` ends it with trailers."""

    def __init__(self, length: int | None = None) -> None:
        super().__init__(length)
        self._send, self._recv = trio.open_memory_channel[bytes | _End](8)

    async def feed(self, data: bytes) -> None:
        for i in range(0, len(data), BODY_CHUNK_MAX_BYTES):
            try:
                await self._send.send(data[i : i + BODY_CHUNK_MAX_BYTES])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # discarded

    async def finish(self, trailers: HeaderList | None = None) -> None:
        try:
            await self._send.send(_End(trailers or []))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def receive(self) -> bytes:
        self.started = True
        item = await self._recv.receive()
        if isinstance(item, _End):
            self.trailers = item.trailers
            return b""
        self.received_bytes += len(item)
        return item

    def discard(self) -> None:
        self._recv.close()


# --- the adapter under test -----------------------------------------------------------------


def backend_plan(port: int, tls: BackendTlsConfig | None = None) -> BackendPlan:
    return BackendPlan(
        id=f"127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        protocol="h2",
        weight=1,
        proxy_protocol="none",
        tls=tls,
    )


@asynccontextmanager
async def running_back(
    plans: list[BackendPlan], limits: HttpLimits | None = None, **options: float
) -> AsyncIterator[H2Back]:
    back = H2Back(limits or HttpLimits(), h2_connect(plans), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(back.serve)
        try:
            yield back
        finally:
            await back.aclose()


def as_backend(plan: BackendPlan) -> Backend:
    return Backend(plan.id, plan.host, plan.port)


def get(path: str, headers: HeaderList | None = None, method: bytes = b"GET") -> RequestHead:
    return RequestHead(method, b"http", b"backend.test", path.encode(), headers or [], b"1.1")


@dataclass
class Answer:
    status: int
    headers: HeaderList
    body: bytes
    trailers: HeaderList


async def exchange(
    back: H2Back, backend: Backend, head: RequestHead, body: BodySource | None = None
) -> Answer:
    """One exchange the way the core runs it: upload in a nursery, body read to its end."""
    failed: HttpError | None = None
    async with trio.open_nursery() as nursery:
        try:
            response = await back.open_exchange(nursery, backend, head, body or BodySource(0))
            data = bytearray()
            try:
                while chunk := await response.body.receive():
                    data += chunk
            except HttpError:
                await response.release(complete=False)
                raise
            await response.release(complete=True)
        except HttpError as exc:
            failed = exc  # raised below, not as a nursery's exception group
        nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return Answer(response.head.status, response.head.headers, bytes(data), response.body.trailers)


async def wait_until(record: RawServerRecord, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not predicate():
            await record.changed.wait()


def assert_no_stream_leak(back: H2Back, backend: Backend) -> None:
    """Every exchange released: no slot held or promised, no stream remembered."""
    for conn in back.pool.connections(backend):
        assert (conn.active, conn.reserved, len(conn.streams)) == (0, 0, 0)
        assert conn.buffered_bytes == 0
