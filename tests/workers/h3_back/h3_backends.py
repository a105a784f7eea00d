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
from hypercorn.trio import serve as hypercorn_serve

from gateway.config.plan import BackendPlan
from gateway.config.schema import BackendTlsConfig
from gateway.http.limits import HttpLimits
from tools.ports import free_port
from workers.http.h3_back import H3Back
from workers.http.h3_dial import H3Dialer


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
