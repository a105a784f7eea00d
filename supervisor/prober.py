"""Active health checks, run by the supervisor, verdicts broadcast to every worker.

One task per (listener, backend) with a `[listeners.health]` table: every
`interval_ms` a TCP connect, or an HTTP GET whose status must fall in `expected_status`,
each bounded by `timeout_ms`. The GET speaks the backend's protocol: HTTP/1.1 (h11), or
HTTP/2 for `protocol = "h2"` backends (gateway/health/h2_probe.py; h2c with prior knowledge,
or TLS with ALPN h2 and the backend's verification settings when it has a `tls` table),
HTTP/3 for `protocol = "h3"` backends (gateway/health/h3_probe.py over a UDP socket, the
QUIC handshake verifying the certificate as the workers do), or a gRPC
`grpc.health.v1.Health/Check` call over HTTP/2 the same way (gateway/health/
grpc_probe.py; SERVING passes). Results feed the pure rise/fall
state machine (gateway/health/active.py); a transition is logged once and sent to
the workers as `SetBackendHealth`. States survive reloads for backends that stay.
"""

from __future__ import annotations

import functools
import socket as stdsocket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import h11
import structlog
import trio
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from gateway.config.plan import BackendPlan, GatewayPlan, ListenerPlan
from gateway.config.schema import BackendTlsConfig
from gateway.config.validate import parse_status_ranges
from gateway.health import ActiveHealth, ActiveState
from gateway.health.grpc_probe import GrpcHealthProbe
from gateway.health.h2_probe import H2Probe, status_problem
from gateway.health.h3_probe import H3Probe

log = structlog.get_logger("expressgateway.supervisor")

Broadcast = Callable[[str, str, bool], Awaitable[None]]


@dataclass(slots=True)
class Verdict:
    health: ActiveHealth
    last_result: str = ""
    last_probe_at: float = 0.0

    @property
    def state(self) -> str:
        return self.health.state.value


async def probe_tcp(backend: BackendPlan, timeout_s: float) -> str:
    """'' when the backend accepted a connection, else the reason."""
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(backend.host, backend.port)
        except OSError as exc:
            return f"connect: {exc.strerror or exc}"
        await stream.aclose()
        return ""
    return f"timeout after {timeout_s:.3f}s"


async def probe_http(backend: BackendPlan, listener: ListenerPlan, timeout_s: float) -> str:
    health = listener.health
    assert health is not None
    ranges = parse_status_ranges(health.expected_status) or [(200, 399)]
    host = health.host or backend.id
    if backend.protocol == "h2":
        return await probe_h2(backend, health.path, host, ranges, health.expected_status, timeout_s)
    if backend.protocol == "h3":
        return await probe_h3(backend, health.path, host, ranges, health.expected_status, timeout_s)
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(backend.host, backend.port)
        except OSError as exc:
            return f"connect: {exc.strerror or exc}"
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="GET",
                target=health.path,
                headers=[
                    ("host", host),
                    ("user-agent", "expressgateway-health"),
                    ("connection", "close"),
                ],
            )
            try:
                await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(16384))
                        continue
                    if isinstance(event, h11.Response):
                        return status_problem(event.status_code, ranges, health.expected_status)
                    if isinstance(event, h11.ConnectionClosed):
                        return "closed before a response"
            except h11.RemoteProtocolError as exc:
                return f"bad response: {exc}"
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                return f"io: {exc}"
    return f"timeout after {timeout_s:.3f}s"


@functools.lru_cache(maxsize=64)
def _h2_probe_context(tls: BackendTlsConfig) -> ssl.SSLContext:
    """Verification as the workers dial the backend (workers/tls_context.py), ALPN h2 only."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def _open_h2_probe_stream(backend: BackendPlan) -> trio.abc.Stream:
    """TCP, then TLS + ALPN h2 when the backend has a `tls` table; raises OSError or
    trio.BrokenResourceError, or ValueError when ALPN did not select h2."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(backend.host, backend.port)
    if backend.tls is None:
        return stream
    tls_stream = trio.SSLStream(
        stream,
        _h2_probe_context(backend.tls),
        server_hostname=backend.tls.server_name or backend.host,
    )
    try:
        await tls_stream.do_handshake()
        if tls_stream.selected_alpn_protocol() != "h2":
            raise ValueError(f"ALPN selected {tls_stream.selected_alpn_protocol()!r}, not h2")
    except BaseException:
        await trio.aclose_forcefully(tls_stream)
        raise
    return tls_stream


class _H2ProbeExchange(Protocol):
    """A sans-IO probe over one HTTP/2 connection (gateway/health)."""

    @property
    def done(self) -> bool: ...

    def start(self) -> bytes: ...

    def receive(self, data: bytes) -> bytes: ...


async def _run_over_h2(
    backend: BackendPlan, probe: _H2ProbeExchange, timeout_s: float
) -> str | None:
    """Drive `probe` on a fresh HTTP/2 connection to `backend`: the transport's problem
    (connect, TLS, I/O, timeout), or None once the probe ran to its end (its own verdict
    then tells how the backend answered)."""
    with trio.move_on_after(timeout_s):
        try:
            stream = await _open_h2_probe_stream(backend)
        except OSError as exc:
            return f"connect: {exc.strerror or exc}"
        except (trio.BrokenResourceError, ssl.SSLError, ValueError) as exc:
            return f"tls: {exc.__cause__ or exc}"
        async with stream:
            try:
                await stream.send_all(probe.start())
                while not probe.done:
                    reply = probe.receive(bytes(await stream.receive_some(16384)))
                    if reply:
                        await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                return f"io: {exc}"
            return None
    return f"timeout after {timeout_s:.3f}s"


async def probe_h2(
    backend: BackendPlan,
    path: str,
    host: str,
    ranges: list[tuple[int, int]],
    expected: str,
    timeout_s: float,
) -> str:
    """One HTTP/2 GET on a fresh connection: '' when its status is in `ranges`."""
    probe = H2Probe(
        scheme=b"https" if backend.tls is not None else b"http",
        authority=host.encode(),
        path=path.encode(),
    )
    problem = await _run_over_h2(backend, probe, timeout_s)
    if problem is not None:
        return problem
    # Closed without a GOAWAY of ours: hypercorn (trio) was seen to break its connection on
    # a GOAWAY that crossed its response (two tasks sending at once).
    return probe.problem or status_problem(probe.status, ranges, expected)


async def probe_grpc(backend: BackendPlan, listener: ListenerPlan, timeout_s: float) -> str:
    """One grpc.health.v1.Health/Check call on a fresh HTTP/2 connection: '' for SERVING."""
    health = listener.health
    assert health is not None
    probe = GrpcHealthProbe(
        scheme=b"https" if backend.tls is not None else b"http",
        authority=(health.host or backend.id).encode(),
        service=health.grpc_service,
    )
    problem = await _run_over_h2(backend, probe, timeout_s)
    return probe.problem if problem is None else problem


@functools.lru_cache(maxsize=64)
def _h3_probe_config(tls: BackendTlsConfig | None, host: str) -> QuicConfiguration:
    """Verification as the workers dial the backend (workers/http/h3_dial.py), ALPN h3."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=10.0,
        server_name=(tls.server_name if tls is not None else None) or host,
    )
    if tls is not None and not tls.verify:
        config.verify_mode = ssl.CERT_NONE
    else:
        config.verify_mode = ssl.CERT_REQUIRED
        if tls is not None and tls.ca_path:
            with open(tls.ca_path, "rb") as fh:
                config.cadata = fh.read()
    return config


async def probe_h3(
    backend: BackendPlan,
    path: str,
    host: str,
    ranges: list[tuple[int, int]],
    expected: str,
    timeout_s: float,
) -> str:
    """One HTTP/3 GET on a fresh QUIC connection: '' when its status is in `ranges`."""
    with trio.move_on_after(timeout_s):
        try:
            config = _h3_probe_config(backend.tls, backend.host)
        except OSError as exc:
            return f"tls: ca_path: {exc.strerror or exc}"
        try:
            infos = await trio.socket.getaddrinfo(
                backend.host, backend.port, type=stdsocket.SOCK_DGRAM
            )
            family, type_, proto, _canon, peer = infos[0]
            sock = trio.socket.socket(family, type_, proto)
        except OSError as exc:
            return f"connect: {exc.strerror or exc}"
        with sock:
            probe = H3Probe(config, authority=host.encode(), path=path.encode())
            try:
                await sock.connect(peer)
                probe.start(peer, trio.current_time())
                while not probe.done:
                    for data in probe.datagrams(trio.current_time()):
                        await sock.send(data)
                    with trio.move_on_at(probe.timer() or trio.current_time() + timeout_s):
                        data = await sock.recv(65535)
                        probe.receive(data, peer, trio.current_time())
                        continue
                    probe.handle_timer(trio.current_time())
                probe.close()
                for data in probe.datagrams(trio.current_time()):
                    await sock.send(data)
            except OSError as exc:
                # A connected UDP socket reports the backend's ICMP port unreachable here.
                return f"connect: {exc.strerror or exc}"
            return probe.problem or status_problem(probe.status, ranges, expected)
    return f"timeout after {timeout_s:.3f}s"


class Prober:
    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self._scope: trio.CancelScope | None = None

    def healthy_flags(self) -> list[tuple[str, str, bool]]:
        return [(lst, b, v.health.is_up) for (lst, b), v in self.verdicts.items()]

    async def serve(
        self, plan: GatewayPlan, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Probe every checked backend of `plan` until cancelled (a reload restarts this)."""
        wanted = {(lst.name, b.id) for lst in plan.listeners if lst.health for b in lst.backends}
        for key in list(self.verdicts):
            if key not in wanted:
                del self.verdicts[key]
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                for lst in plan.listeners:
                    if lst.health is None:
                        continue
                    for b in lst.backends:
                        key = (lst.name, b.id)
                        if key not in self.verdicts:
                            self.verdicts[key] = Verdict(
                                ActiveHealth(rise=lst.health.rise, fall=lst.health.fall)
                            )
                        nursery.start_soon(self._probe_forever, lst, b, self.verdicts[key])
                task_status.started()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _probe_forever(
        self, lst: ListenerPlan, backend: BackendPlan, verdict: Verdict
    ) -> None:
        health = lst.health
        assert health is not None
        interval_s = health.interval_ms / 1000
        timeout_s = health.timeout_ms / 1000
        while True:
            started = trio.current_time()
            if health.kind == "http":
                problem = await probe_http(backend, lst, timeout_s)
            elif health.kind == "grpc":
                problem = await probe_grpc(backend, lst, timeout_s)
            else:
                problem = await probe_tcp(backend, timeout_s)
            verdict.last_result = problem or "ok"
            verdict.last_probe_at = time.time()
            transition = verdict.health.observe(not problem)
            if transition is not None:
                up = transition.current is ActiveState.UP
                # A first verdict of up is routine (every start and reload): info. Any
                # change an operator must look at (down, or back up after down): warning.
                routine = up and transition.previous is ActiveState.UNKNOWN
                (log.info if routine else log.warning)(
                    "backend_health_changed",
                    listener=lst.name,
                    backend=backend.id,
                    previous=transition.previous.value,
                    current=transition.current.value,
                    last_result=verdict.last_result,
                )
                await self.broadcast(lst.name, backend.id, up)
            await trio.sleep_until(started + interval_s)
