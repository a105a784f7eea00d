"""Wires an HTTP listener's plan into its front adapters and the proxy core.

Builds, once per worker and listener: the H1 connection loop's context (limits, backend
choice, accounting: workers/http1_listener), the general proxy core's context with one back
adapter per backend protocol (workers/http/registry BACKS), the compiled HTTP/2 settings,
and the connection handler of a cleartext ``h1`` listener, which serves a connection that
opens with the HTTP/2 preface (prior knowledge, RFC 9113 §3.3) as HTTP/2 and any other as
HTTP/1.1. H1 clients reach H1-only backends through the dedicated HTTP/1.1 path unless
``h1_fast_path`` is off; every other cell runs through the general core.
"""

from __future__ import annotations

import os
import socket as stdsocket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from gateway.config.schema import H2Config
from gateway.http.limits import READ_MAX_BYTES, H2Limits
from workers.accepted_stream import accepted_stream, prepare_listener
from workers.http.context import ProxyContext
from workers.http.front import ClientConn
from workers.http.h1_front import general_exchange
from workers.http.h2_dial import h2_connect
from workers.http.h2_front import PREFACE
from workers.http.h3_dial import h3_dialer
from workers.http.registry import BACKS, FRONTS, FrontKit
from workers.http1.socket_io import stdlib_socket
from workers.http1.taskless import HTTP1, NOT_YET, OTHER, start_taskless
from workers.http1_listener import backend_connect, make_h1_context

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

Handler = Callable[[trio.socket.SocketType, tuple[str, int]], Awaitable[None]]
_PREFACE_POLL_S = 0.01


def h2_limits(config: H2Config | None) -> H2Limits:
    h = config or H2Config()
    return H2Limits(
        max_concurrent_streams=h.max_concurrent_streams,
        initial_stream_window_size=h.initial_stream_window_size,
        initial_connection_window_size=h.initial_connection_window_size,
        max_header_list_size=h.max_header_list_size,
        max_frame_size=h.max_frame_size,
        keepalive_interval_s=h.keepalive_interval_ms / 1000,
        keepalive_timeout_s=h.keepalive_timeout_ms / 1000,
        idle_timeout_s=h.idle_timeout_ms / 1000,
        enable_connect_protocol=h.enable_connect_protocol,
        flood_window_s=h.flood_window_ms / 1000,
        max_resets_per_window=h.max_resets_per_window,
        max_pings_per_window=h.max_pings_per_window,
        max_settings_per_window=h.max_settings_per_window,
        max_empty_data_per_window=h.max_empty_data_per_window,
        max_priority_per_window=h.max_priority_per_window,
        max_refused_per_window=h.max_refused_per_window,
        prior_knowledge=h.prior_knowledge,
    )


def make_front_kit(runtime: ListenerRuntime, worker: Worker) -> FrontKit:
    """The contexts every front of this listener shares; drain reaches all of them."""
    h1 = make_h1_context(runtime, worker)
    plan = runtime.plan
    connects: dict[str, Any] = {
        "h1": backend_connect(runtime),
        "h2": h2_connect(plan.backends),
        "h3": h3_dialer(plan.backends),  # reads h3 backends' CA files now, before the drop
    }
    adapters = {
        proto: BACKS[proto](h1.limits, connects[proto])
        for proto in {b.protocol for b in plan.backends}
    }
    proxy = ProxyContext(
        listener=plan.name,
        pick_backend=h1.pick_backend,
        back_for={b.id: adapters[b.protocol] for b in plan.backends},
        limits=h1.limits,
        on_request_done=h1.on_request_done,
        on_backend_result=h1.on_backend_result,
        on_reject=runtime.stats.reject,
        draining=h1.draining,
        rng=h1.rng,
        retry_budget=h1.retry_budget(),  # one budget for the listener, whichever path
        on_retry_denied=h1.on_retry_denied,
    )
    assert plan.http is not None
    if plan.alt_svc is not None:
        proxy.response_headers = [(b"alt-svc", plan.alt_svc)]
    # The dedicated HTTP/1.1 path relays heads as they come: fields the listener adds to
    # responses (Alt-Svc) are added by the general core only.
    if set(adapters) != {"h1"} or not plan.http.h1_fast_path or plan.alt_svc is not None:
        h1.general = general_exchange(proxy)
    else:
        h1.grpc_general = general_exchange(proxy)

    def start_drain(grace_s: float) -> None:
        h1.start_drain(grace_s)
        proxy.drain_deadline_at = h1.drain_deadline_at

    runtime.on_drain = start_drain
    return FrontKit(h1=h1, proxy=proxy, h2=h2_limits(plan.h2))


# What a connection's first bytes say (peeked, so nothing is consumed).
H1 = 1
H2 = 2
SILENT = 0  # nothing within the header timeout, or EOF: closed without a word, as H1 does


def _peek_now(sock: trio.socket.SocketType, n: int) -> bytes | None:
    """Up to ``n`` bytes already received on ``sock``, left in place; None if none yet.

    Peeks through the stdlib socket trio's wraps (``socket_io.stdlib_socket``): a stdlib
    socket made for the fd instead costs a ``getsockname`` and two ``getsockopt`` per
    connection (what a trio version that keeps it otherwise still pays)."""
    std = stdlib_socket(sock)
    if std is None:
        std = stdsocket.socket(fileno=sock.fileno())
        try:
            return _peek(std, n)
        finally:
            std.detach()  # the fd stays the connection's
    return _peek(std, n)


def _peek(std: stdsocket.socket, n: int) -> bytes | None:
    try:
        return std.recv(n, stdsocket.MSG_PEEK | stdsocket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def _classify(data: bytes) -> int | None:
    if not data:
        return SILENT
    if not PREFACE.startswith(data):
        return H1
    if len(data) == len(PREFACE):
        return H2
    return None  # a partial preface: wait for the rest


async def sniff_preface(sock: trio.socket.SocketType, timeout_s: float) -> int:
    """H2 when the client opens with the HTTP/2 connection preface, H1 for anything else."""
    try:  # the first bytes are often there already: decide without a wait or a timer
        ready = _peek_now(sock, len(PREFACE))
    except OSError:
        return SILENT
    if ready is not None and (kind := _classify(ready)) is not None:
        return kind
    with trio.move_on_after(timeout_s):
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = await sock.recv(len(PREFACE), stdsocket.MSG_PEEK)
            except OSError:
                return SILENT
            if (kind := _classify(data)) is not None:
                return kind
            await trio.sleep(_PREFACE_POLL_S)  # a partial preface: wait for the rest
    return SILENT


class PriorKnowledge:
    """The first bytes of a cleartext h1 listener's connection: HTTP/1.1, or HTTP/2 with prior
    knowledge (``taskless.FirstBytes``). Read, not peeked: the read serves the request too
    (a ``MSG_PEEK`` per connection was ~6 µs of a ~63 µs connection, issue 18)."""

    __slots__ = ("h2_front",)

    def __init__(self, h2_front: Callable[[ClientConn], Awaitable[None]]) -> None:
        self.h2_front = h2_front

    def read_first(self, sock: trio.socket.SocketType) -> bytes | None:
        try:
            return os.read(sock.fileno(), READ_MAX_BYTES)
        except BlockingIOError:
            return None
        except OSError:  # reset, or closed: the connection's end
            return b""

    def classify(self, data: bytes) -> int:
        kind = _classify(data[: len(PREFACE)])  # the frames behind the preface may be here too
        if kind is None:
            return NOT_YET  # a partial preface: the rest decides
        return HTTP1 if kind == H1 else OTHER

    async def serve_other(self, stream: trio.SocketStream, client: str, first: bytes) -> None:
        await self.h2_front(ClientConn(stream, client, preread=first))


def make_h1_listener_handler(runtime: ListenerRuntime, worker: Worker) -> Handler:
    kit = make_front_kit(runtime, worker)
    h1_front = FRONTS["h1"](kit)
    h2_front = FRONTS["h2"](kit)
    sniff = kit.h2.prior_knowledge
    sniff_timeout_s = kit.h1.limits.header_timeout_ms / 1000
    prepared = runtime.raw is not None and prepare_listener(runtime.raw)
    h1 = kit.h1
    if prepared and h1.resident and h1.general is None:
        preface = PriorKnowledge(h2_front) if sniff else None

        def start_now(sock: trio.socket.SocketType, addr: tuple[str, int]) -> bool:
            """Start a connection without a task (workers/http1/taskless.py), its first bytes
            read here if they came (HTTP/2's preface then gets a task of the HTTP/2 front);
            one that ended before a byte gets a task running ``handle``."""
            read = b""
            if preface is not None:
                first = preface.read_first(sock)
                if first == b"":
                    return False  # its end before a byte: the task's sniff sees it too
                read = first or b""
            start_taskless(accepted_stream(sock), h1, addr[0], runtime, addr, preface, read)
            return True

        runtime.start_now = start_now

    async def handle(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
        client = ClientConn(accepted_stream(sock), addr[0])
        kind = await sniff_preface(sock, sniff_timeout_s) if sniff else H1
        if kind == H2:
            await h2_front(client)
        elif kind == H1:
            await h1_front(client)

    return handle
