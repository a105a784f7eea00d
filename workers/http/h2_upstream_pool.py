"""Per-backend sets of multiplexed HTTP/2 connections and the stream slots on them.

Owns: which connection a new stream goes to (the oldest with a free slot: packing lets the
others go idle), when another connection is opened (every usable one is full, none is being
opened, fewer than ``max_per_backend`` exist), how long an exchange waits for a slot (the
connect timeout; then ``PoolExhausted``), closing connections that idle past
``idle_timeout_s`` or beyond ``max_idle_per_backend``, and the PING keep-alive's clock (a
connection whose ACK is late is closed). Connections' reader/writer tasks run in the pool's
nursery: ``serve`` where the owner hosts it, else a trio system task started on first use,
which ends once the pool held no connection for an idle timeout. Must never speak HTTP/2
itself or retry a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
import trio

from gateway.http.h2_upstream import PING_INTERVAL_S, PING_TIMEOUT_S
from gateway.http.limits import PoolLimits
from workers.http.back import UpstreamRefused
from workers.http.h2_upstream_connection import H2UpstreamConnection
from workers.http1.backend import (
    Backend,
    Connect,
    ConnectFailed,
    ConnectTimedOut,
    connect_with_timeout,
)
from workers.http1.pool import PoolExhausted

log = structlog.get_logger("expressgateway.worker")


class _SetOnStarted:
    """A task_status for a task started without ``nursery.start``: sets an Event."""

    def __init__(self, event: trio.Event) -> None:
        self._event = event

    def started(self, value: None = None) -> None:
        self._event.set()


@dataclass(slots=True)
class _BackendConnections:
    conns: list[H2UpstreamConnection] = field(default_factory=list)
    connecting: int = 0
    changed: trio.Event | None = None

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    async def wait_changed(self) -> None:
        if self.changed is None:
            self.changed = trio.Event()
        await self.changed.wait()


class H2UpstreamPool:
    def __init__(
        self,
        limits: PoolLimits,
        connect: Connect,
        *,
        max_header_bytes: int,
        max_headers: int,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self.limits = limits
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self._connect = connect
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._sets: dict[Backend, _BackendConnections] = {}
        self._nursery: trio.Nursery | None = None
        self._started: trio.Event | None = None  # set while a self-started serve is starting
        self._self_hosted = False  # serve runs in our system task, not in the owner's nursery
        self._closed = False

    @property
    def serving(self) -> bool:
        """Whether ``serve`` runs (hosted by the owner, or by our own system task)."""
        return self._nursery is not None

    def connections(self, backend: Backend) -> list[H2UpstreamConnection]:
        found = self._sets.get(backend)
        return list(found.conns) if found else []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connections' tasks and the idle reaper until cancelled or ``aclose``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._housekeep_forever)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def _ensure_serving(self) -> trio.Nursery:
        """The nursery of ``serve``; when nobody started it, a trio system task runs it (a
        worker that builds adapters synchronously need not host them)."""
        if self._closed:
            raise RuntimeError("H2UpstreamPool is closed")
        while self._nursery is None:
            if self._started is None:
                self._started = trio.Event()
                trio.lowlevel.spawn_system_task(self._serve_detached, self._started)
            await self._started.wait()
            if self._closed:
                raise RuntimeError("H2UpstreamPool is closed")
        return self._nursery

    async def _serve_detached(self, started: trio.Event) -> None:
        self._self_hosted = True
        try:
            await self.serve(task_status=_SetOnStarted(started))
        except Exception:
            # A bug in a connection's task ended the pool: say so, and let the next exchange
            # start a fresh one rather than take the whole worker down (a system task's
            # exception would). Its connections' streams have failed already.
            log.exception("h2_upstream_pool_failed")
        finally:
            self._self_hosted = False
            started.set()
            if self._started is started:
                self._started = None

    async def aclose(self) -> None:
        self._closed = True
        for found in self._sets.values():
            for conn in list(found.conns):
                conn.close("pool closed")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def acquire(self, backend: Backend) -> H2UpstreamConnection:
        """A ready connection with one stream slot reserved for the caller (``open_stream``
        takes it). Raises UpstreamRefused (connect failed) or PoolExhausted."""
        await self._ensure_serving()
        found = self._sets.get(backend)
        if found is None:
            found = self._sets[backend] = _BackendConnections()
        timeout_s = self.limits.connect_timeout_ms / 1000
        deadline = trio.current_time() + timeout_s
        while True:
            for conn in found.conns:
                if conn.has_room():
                    conn.reserved += 1
                    return conn
            # A backend that allows no stream now (SETTINGS_MAX_CONCURRENT_STREAMS 0) gets no
            # further connections either: wait for its SETTINGS to change.
            stalled = any(c.usable and c.capacity == 0 and c.ready.is_set() for c in found.conns)
            if (
                found.connecting == 0
                and not stalled
                and len(found.conns) < self.limits.max_per_backend
            ):
                conn = await self._open(backend, found, deadline)
                if conn.has_room():
                    conn.reserved += 1
                    return conn
                continue
            with trio.move_on_at(deadline):
                await found.wait_changed()
                continue
            raise PoolExhausted(
                f"{backend.id}: no HTTP/2 stream slot within {timeout_s:.3f}s "
                f"({len(found.conns)} connections)"
            )

    async def _open(
        self, backend: Backend, found: _BackendConnections, deadline: float
    ) -> H2UpstreamConnection:
        nursery = await self._ensure_serving()
        found.connecting += 1
        try:
            remaining_s = max(0.0, deadline - trio.current_time())
            try:
                stream = await connect_with_timeout(self._connect, backend, remaining_s)
            except (ConnectFailed, ConnectTimedOut) as exc:
                raise UpstreamRefused(str(exc), kind=exc.kind) from None
            if isinstance(stream, trio.SSLStream) and stream.selected_alpn_protocol() != "h2":
                # A connect without ALPN h2 (not workers/http/h2_dial): the server would read
                # our preface as a broken HTTP/1.1 request.
                await trio.aclose_forcefully(stream)
                raise UpstreamRefused(
                    f"{backend.id}: TLS did not negotiate h2 via ALPN "
                    f"(selected {stream.selected_alpn_protocol() or 'nothing'})",
                    kind="alpn",
                )
            conn = H2UpstreamConnection(
                stream,
                scheme=b"https" if isinstance(stream, trio.SSLStream) else b"http",
                max_header_bytes=self._max_header_bytes,
                max_headers=self._max_headers,
                on_slot_freed=lambda c: self._slot_freed(found, c),
            )
            await nursery.start(self._run_connection, found, conn)
            with trio.move_on_at(deadline):
                await conn.ready.wait()
            if conn.closed or not conn.ready.is_set():
                conn.close("no SETTINGS from the backend")
                raise UpstreamRefused(
                    f"{backend.id}: no HTTP/2 SETTINGS from the backend",
                    kind="connect_timeout" if not conn.closed else "upstream_protocol",
                )
            return conn
        finally:
            found.connecting -= 1
            found.notify()

    async def _run_connection(
        self,
        found: _BackendConnections,
        conn: H2UpstreamConnection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        found.conns.append(conn)
        try:
            await conn.serve(task_status=task_status)
        finally:
            found.conns.remove(conn)
            found.notify()

    def _slot_freed(self, found: _BackendConnections, conn: H2UpstreamConnection) -> None:
        found.notify()
        # A connection that never carried a stream is its opener's to use (or the reaper's).
        if conn.idle and not conn.draining and conn.h2.highest_outbound_stream_id > 0:
            idle = sum(1 for c in found.conns if c.idle and not c.draining)
            if idle > self.limits.max_idle_per_backend:
                conn.close_gracefully()

    async def _housekeep_forever(self) -> None:
        """Close connections idle past ``idle_timeout_s``; PING quiet ones (keep-alive)."""
        idle_timeout_s = self.limits.idle_timeout_s
        tick_s = min(idle_timeout_s / 4, self.ping_interval_s / 2, self.ping_timeout_s / 2, 5.0)
        tick_s = max(tick_s, 0.05)
        empty_since = trio.current_time()
        while True:
            await trio.sleep(tick_s)
            now = trio.current_time()
            empty = True
            for found in self._sets.values():
                empty = empty and not found.conns and found.connecting == 0
                for conn in list(found.conns):
                    if conn.idle and now - conn.idle_since >= idle_timeout_s:
                        conn.close_gracefully()
                    elif conn.ready.is_set():
                        conn.keepalive(now, self.ping_interval_s, self.ping_timeout_s)
            if not empty:
                empty_since = now
            elif self._self_hosted and now - empty_since >= idle_timeout_s:
                # Nothing to host for an idle timeout: the system task ends (a retired
                # listener's adapter leaves no task behind); the next exchange starts another.
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
                return
