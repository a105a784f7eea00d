"""One worker process: serves every listener on its CPU's inherited sockets.

Lifecycle: receive `Boot` (plan + fds) -> start accept loops -> report BecameReady
-> heartbeat every second -> on `Drain`, stop accepting, let connections finish
until the deadline, close the rest cleanly, report Drained, exit (a later `Drain` changes
nothing: the first one's budget stands). On `Stop` (or
when the supervisor's channel closes) exit at once.
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import socket as stdsocket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from gateway.config.plan import ListenerPlan
from gateway.fd_budget import auto_inflight_cap
from gateway.ipc import (
    BackendFigures,
    BecameReady,
    Boot,
    Drain,
    Drained,
    Heartbeat,
    SetBackendHealth,
    Stop,
)
from gateway.limits import ConnectionGate
from gateway.logs import RateLimitedLog
from gateway.metrics.snapshot import encode_snapshot
from gateway.metrics.worker import WorkerMetrics
from workers.accept import serve_accept_loop
from workers.access_log import AccessLog
from workers.channel import SupervisorChannel
from workers.dial import load_backend_tls
from workers.stats import ListenerStats
from workers.tcp_proxy import handle_tcp_connection
from workers.upstreams import UpstreamSet

log = structlog.get_logger("expressgateway.worker")

Handler = Callable[[trio.socket.SocketType, tuple[str, int]], Awaitable[None]]
HEARTBEAT_S = 1.0
DRAIN_CLOSE_GRACE_S = 0.5


async def _no_stream_handler(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
    raise RuntimeError("a datagram listener has no stream handler")


class ListenerRuntime:
    def __init__(
        self,
        plan: ListenerPlan,
        sock: trio.socket.SocketType,
        worker: Worker,
        raw: stdsocket.socket | None = None,
    ) -> None:
        self.plan = plan
        self.config = worker.boot.plan.config
        self.sock = sock
        self.raw = raw  # the stdlib socket behind ``sock`` (the accept loop's own accept)
        self.worker = worker
        self.on_drain: Callable[[float], None] | None = None
        # Cancelled at this listener's drain deadline: the scopes of its connections' tasks,
        # and its connections that run without one (workers/http1/taskless.py).
        self.live_scopes: set[Any] = set()
        # Starts an accepted connection without a task (True), or declines it (False: it
        # then gets a task running ``handler``); set by listeners that can. It raises only
        # before it took the connection (a bug: the worker then closes it).
        self.start_now: Callable[[trio.socket.SocketType, tuple[str, int]], bool] | None = None
        self.stats = ListenerStats(plan.name, worker.metrics)
        self.upstreams = UpstreamSet(plan)
        # quic listeners: the datagram task, run in the worker's connections nursery
        self.serve_datagrams: Callable[[], Awaitable[None]] | None = None
        self.handler = self._make_handler(worker)

    async def cut_connections_at(self, deadline: float) -> None:
        """At this listener's drain deadline, close what is still open."""
        await trio.sleep_until(deadline)
        self.cut_connections()

    def cut_connections(self) -> None:
        for scope in list(self.live_scopes):
            scope.cancel()

    # What a connection started without a task uses (workers/http1/taskless.ConnectionHost).

    def connection_task(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.worker.connections.start_soon(fn, *args)

    def connection_failed(self, token: Any, exc: BaseException) -> None:
        self.worker.connection_failed(self, token, exc)

    def connection_ended(self, token: Any) -> None:
        self.worker.connection_ended(self, token)

    def _make_handler(self, worker: Worker) -> Handler:
        if self.plan.protocol == "tcp":
            load_backend_tls(self.plan.backends)  # a bad CA fails the boot, not a connection

            async def tcp(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
                await handle_tcp_connection(sock, addr, self.upstreams, self.stats)

            return tcp
        if self.plan.protocol == "h1":
            from workers.http_listener import make_h1_listener_handler

            return make_h1_listener_handler(self, worker)
        if self.plan.protocol == "h1s":
            from workers.h1s_listener import make_h1s_handler

            return make_h1s_handler(self, worker)
        if self.plan.protocol == "tls":
            from workers.tls_listener import make_tls_handler

            return make_tls_handler(self, worker)
        if self.plan.protocol == "quic":
            from workers.h3_listener import make_quic_server

            self.serve_datagrams = make_quic_server(self, worker)
            return _no_stream_handler
        if self.plan.protocol in ("udp", "quic_passthrough"):
            return _no_stream_handler  # datagrams are served by workers/udp_proxy.py
        raise RuntimeError(f"listener protocol {self.plan.protocol!r} has no handler in this build")


def inflight_cap(boot: Boot) -> int:
    """`max_inflight_connections`, with "auto" sized from this process's open-files limit
    (the supervisor raised the soft limit to the hard one before starting workers)."""
    rt = boot.plan.config.runtime
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = rt.max_inflight_connections
    if not isinstance(cap, int):
        pooled = sum(
            lp.http.pool_max_idle_per_backend * len(lp.backends)
            for lp in boot.plan.listeners
            if lp.http is not None
        )
        cap = auto_inflight_cap(
            soft, (lp.protocol for lp in boot.plan.listeners), pooled_upstream_fds=pooled
        )
    log.info("worker_fd_budget", nofile=soft, max_inflight_connections=cap)
    return cap


class Worker:
    def __init__(self, boot: Boot, channel: SupervisorChannel) -> None:
        self.boot = boot
        self.channel = channel
        rt = boot.plan.config.runtime
        self.gate = ConnectionGate(
            per_ip_cap=rt.per_ip_connection_cap,
            inflight_cap=inflight_cap(boot),
            ipv6_prefix=rt.per_ip_ipv6_prefix,
        )
        self.metrics = WorkerMetrics()
        obs = boot.plan.config.observability
        self.access_log = AccessLog(
            enabled=obs.access_log, flush_interval_s=obs.access_log_flush_ms / 1000
        )
        # Repeated errors of one kind are logged a few times per minute, then summarised.
        self.error_log = RateLimitedLog(log, max_per_window=5, window_s=60.0, now=time.monotonic)
        self.listeners: dict[str, ListenerRuntime] = {}
        for lp in boot.plan.listeners:
            fd = boot.listener_fds[lp.name]
            std = stdsocket.socket(fileno=fd)
            self.listeners[lp.name] = ListenerRuntime(
                lp, trio.socket.from_stdlib_socket(std), self, std
            )
        self.handled_connections = 0
        self.active_connections = 0
        self.draining = trio.Event()
        self.drain_deadline = float("inf")
        self._drain_requested = False  # a Drain arrived (later ones are ignored)
        self._accept_scope = trio.CancelScope()
        self._connections: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._accepting_done = trio.Event()

    def _on_connection(
        self, runtime: ListenerRuntime
    ) -> Callable[[trio.socket.SocketType, tuple[str, int]], None]:
        def spawn(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
            reason = self.gate.admit(addr[0])
            if reason is not None:
                runtime.stats.reject(reason)
                sock.close()
                return
            assert self._connections is not None
            # Count it now, not when its task first runs: a drain that starts in
            # between must see this connection as in flight.
            self.active_connections += 1
            if self._idle.is_set():
                self._idle = trio.Event()
            self.handled_connections += 1
            runtime.stats.connection_opened()
            start_now = runtime.start_now
            if start_now is not None:
                try:
                    if start_now(sock, addr):
                        return  # it runs without a task; its end calls connection_ended
                except Exception as exc:  # a bug: this connection is lost, never the accept loop
                    self.connection_failed(runtime, addr, exc)
                    sock.close()
                    self.connection_ended(runtime, addr)
                    return
            self._connections.start_soon(self._run_connection, runtime, sock, addr)

        return spawn

    async def _run_connection(
        self, runtime: ListenerRuntime, sock: trio.socket.SocketType, addr: tuple[str, int]
    ) -> None:
        scope = trio.CancelScope()
        runtime.live_scopes.add(scope)
        try:
            with scope:  # cancelled at this listener's own drain deadline
                await runtime.handler(sock, addr)
        except Exception as exc:  # a bug in one connection must never take the worker down
            self.connection_failed(runtime, addr, exc)
        finally:
            runtime.live_scopes.discard(scope)
            sock.close()
            self.connection_ended(runtime, addr)

    def connection_failed(
        self, runtime: ListenerRuntime, addr: tuple[str, int], exc: BaseException
    ) -> None:
        self.error_log.error(
            "connection_failed",
            key=f"connection_failed:{runtime.plan.name}:{type(exc).__name__}",
            listener=runtime.plan.name,
            client=addr[0],
            error=repr(exc),
        )

    def connection_ended(self, runtime: ListenerRuntime, addr: tuple[str, int]) -> None:
        """A connection (with a task or without) is closed: its accounting ends."""
        self.gate.release(addr[0])
        runtime.stats.connection_closed()
        self.active_connections -= 1
        if self.active_connections == 0:
            self._idle.set()

    def _cut_all(self) -> None:
        """Cancel every connection still open (a task's scope is cancelled by its nursery's
        too; one without a task is not in any nursery: this gives it one, cancelled)."""
        for runtime in self.listeners.values():
            runtime.cut_connections()

    @property
    def connections(self) -> trio.Nursery:
        """The nursery of in-flight work: it outlives accepting and ends with the drain."""
        assert self._connections is not None
        return self._connections

    def session_opened(self) -> None:
        """A datagram session began: it counts as in-flight work until `session_closed`."""
        self.handled_connections += 1
        self.active_connections += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def session_closed(self) -> None:
        self.active_connections -= 1
        if self.active_connections == 0:
            self._idle.set()

    def heartbeat(self) -> Heartbeat:
        now = time.monotonic()
        figures = [
            BackendFigures(
                listener=name,
                backend_id=b.id,
                active_connections=rt.upstreams.active_connections[i],
                failures=rt.upstreams.consecutive_failures[i],
                ejected_until_s=rt.upstreams.ejected_for_s(i, now),
            )
            for name, rt in self.listeners.items()
            for i, b in enumerate(rt.upstreams.backends)
        ]
        return Heartbeat(
            backends=figures,
            active_connections=self.active_connections,
            handled_connections=self.handled_connections,
            handled_requests=sum(r.stats.requests_total for r in self.listeners.values()),
            metrics=encode_snapshot(self.metrics.snapshot()),
        )

    async def _serve_error_log_flush(self) -> None:
        while True:
            await trio.sleep(self.error_log.window_s)
            self.error_log.flush()

    async def serve_heartbeats(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT_S)
            await self.channel.send(self.heartbeat())

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting now; wait for connections up to `timeout_s`; close the rest."""
        if self.draining.is_set():
            return
        self.drain_deadline = trio.current_time() + timeout_s
        self._accept_scope.cancel()
        # An accept that completed just before the cancel still hands its socket over;
        # wait until every accept loop has really ended before judging idleness.
        await self._accepting_done.wait()
        self.draining.set()
        started = trio.current_time()
        for runtime in self.listeners.values():
            # Each listener keeps its own budget (e.g. long for WebSockets, short for
            # plain HTTP); `timeout_s` caps them all (gatewayctl drain --timeout).
            budget_s = min(timeout_s, runtime.plan.drain_timeout_ms / 1000)
            if runtime.on_drain is not None:
                runtime.on_drain(budget_s)
            self.connections.start_soon(
                runtime.cut_connections_at, started + budget_s + DRAIN_CLOSE_GRACE_S
            )
        log.info("worker_draining", active_connections=self.active_connections, timeout_s=timeout_s)
        # A short grace past the deadline lets protocol handlers send their goodbyes
        # (WebSocket close frames) before the remaining connections are cut.
        with trio.move_on_at(self.drain_deadline + DRAIN_CLOSE_GRACE_S):
            await self._idle.wait()
        left = self.active_connections
        assert self._connections is not None
        self._cut_all()
        self._connections.cancel_scope.cancel()
        await trio.sleep(0)  # let cancelled connections unwind so the last heartbeat counts them
        await self.channel.send(self.heartbeat())
        await self.channel.send(Drained(closed_connections=left))

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Requests that ended while the nurseries unwound (after the flush task's own
            # last flush) are written too: a drained or stopped worker loses no access line.
            self.access_log.flush()

    async def _serve_sigterm(self) -> None:
        """SIGTERM (the supervisor's step after an overrun drain) still ends the worker at
        once, by the signal as before, but writes the buffered access lines first."""
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                self.access_log.flush()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

    async def _run(self) -> None:
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as connections:
                self._connections = connections
                with self._accept_scope:
                    async with trio.open_nursery() as accepting:
                        for runtime in self.listeners.values():
                            if runtime.serve_datagrams is not None:
                                # QUIC connections keep their packets through a drain: the
                                # read loop is not part of accepting.
                                connections.start_soon(runtime.serve_datagrams)
                                continue
                            if runtime.plan.protocol == "quic_passthrough":
                                from workers.quic_passthrough import (
                                    serve_quic_passthrough_listener,
                                )

                                await accepting.start(
                                    serve_quic_passthrough_listener, runtime, self
                                )
                                continue
                            if runtime.plan.socket.transport == "udp":
                                from workers.udp_proxy import serve_udp_listener

                                # Datagram sessions outlive the read loop (drain), so their
                                # tasks live in the connections nursery.
                                await accepting.start(serve_udp_listener, runtime, self)
                                continue
                            await accepting.start(
                                functools.partial(
                                    serve_accept_loop,
                                    on_exhausted=runtime.stats.reject,
                                    raw=runtime.raw,
                                ),
                                runtime.sock,
                                runtime.plan.name,
                                self._on_connection(runtime),
                            )
                        await self.channel.send(BecameReady(pid=os.getpid()))
                        log.info("worker_ready", listeners=list(self.listeners))
                        outer.start_soon(self.serve_heartbeats)
                        outer.start_soon(self.access_log.serve_flush)
                        outer.start_soon(self._serve_sigterm)
                        outer.start_soon(self._serve_error_log_flush)
                        outer.start_soon(self._serve_commands, outer)
                        await trio.sleep_forever()
                # Accepting stopped (drain). Close this worker's copies of the listening
                # sockets; the supervisor's copies keep them open for the replacement.
                for runtime in self.listeners.values():
                    runtime.sock.close()
                self._accepting_done.set()
                # Connections run on until drain cancels them;
                # drain then reports Drained and ends the outer nursery itself.
                await trio.sleep_forever()

    async def _serve_commands(self, outer: trio.Nursery) -> None:
        async for message in self.channel.receive():
            if isinstance(message, Drain):
                if self._drain_requested:
                    # A reload or stop while this worker drains: its budget stands. Ending
                    # now would cut the connections it is finishing.
                    log.info("worker_drain_repeated", timeout_s=message.timeout_s)
                    continue
                self._drain_requested = True
                outer.start_soon(self._drain_then_exit, message.timeout_s, outer)
            elif isinstance(message, Stop):
                break
            elif isinstance(message, SetBackendHealth):
                runtime = self.listeners.get(message.listener)
                if runtime is not None:
                    runtime.upstreams.set_active_health(message.backend_id, message.healthy)
        self._cut_all()  # connections without a task get one, and it ends with the run
        outer.cancel_scope.cancel()  # Stop, or the supervisor went away

    async def _drain_then_exit(self, timeout_s: float, outer: trio.Nursery) -> None:
        await self.drain(timeout_s)
        outer.cancel_scope.cancel()
