"""HTTP/3 backends for the h3 back adapter's tests: hypercorn serving QUIC in the test's
trio run (the cell tests' ASGI app: /headers, /echo, /bytes/N, /sha, /trailers, /status/N),
and the adapter wired the way a worker wires it.

Owns: starting hypercorn with ``quic_bind`` on a fresh UDP port, a backend plan with a
``tls`` table, and ``running_h3_back``. The exchange helpers are the h2 adapter's
(tests/workers/h2_back/h2_backends.py); the scripted aioquic server for what hypercorn cannot
be told to do (lower MAX_STREAMS, GOAWAY, reject, request trailers). Must never listen
anywhere but 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from asgi_backend import app as cells_app
from h3_scripted_backend import scripted_h3 as scripted_h3
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.quic import QuicProtocol
from hypercorn.trio import serve as hypercorn_serve

from gateway.config.plan import BackendPlan
from gateway.config.schema import BackendTlsConfig
from gateway.http.limits import HttpLimits
from tools.ports import free_port
from workers.http.h3_back import H3Back
from workers.http.h3_dial import H3Dialer


async def _handle_timer_unless_terminated(self: Any, timer: float, connection: Any) -> None:
    """hypercorn 0.18's ``QuicProtocol._handle_timer``, except a timer that wakes after its
    connection terminated does nothing. hypercorn restarts a connection's timer task on each
    send and stops it on termination, but a timer whose sleep already ended runs on: aioquic
    (1.7) then compares the time with the close timer it cleared (``TypeError``), and the
    error ends hypercorn's whole UDP server, failing whichever test it served (seen once in
    a full run). A defect of the test's peer, not of the code under test."""
    await self.context.sleep(max(0, timer - self.context.time()))
    if connection.quic._close_at is None:  # terminated while this timer slept
        return
    connection.quic.handle_timer(now=self.context.time())
    await self._handle_events(connection, None)


QuicProtocol._handle_timer = _handle_timer_unless_terminated  # type: ignore[method-assign]


@asynccontextmanager
async def hypercorn_h3(certs: Any, app: Any = cells_app) -> AsyncIterator[int]:
    """hypercorn serving ``app`` over HTTP/3 on a fresh UDP port (and TLS TCP beside it)."""
    port = free_port(socket.SOCK_DGRAM)
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{free_port()}"]
    config.quic_bind = [f"127.0.0.1:{port}"]
    config.certfile = str(certs.cert)
    config.keyfile = str(certs.key)
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: hypercorn_serve(
                app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        try:
            yield port
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 1


def h3_plan(port: int, tls: BackendTlsConfig) -> BackendPlan:
    return BackendPlan(
        id=f"127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        protocol="h3",
        weight=1,
        proxy_protocol="none",
        tls=tls,
    )


@asynccontextmanager
async def running_h3_back(
    plans: list[BackendPlan], limits: HttpLimits | None = None
) -> AsyncIterator[H3Back]:
    back = H3Back(limits or HttpLimits(), H3Dialer(plans))
    async with trio.open_nursery() as nursery:
        await nursery.start(back.serve)
        try:
            yield back
        finally:
            await back.aclose()
