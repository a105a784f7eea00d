"""Dialling an HTTP/2 backend: h2c with prior knowledge, or TLS that must negotiate ``h2``.

Owns the connect factory ``H2Back`` is built with: from a backend's plan, a plain TCP stream
(no ``tls`` table: the HTTP/2 preface goes straight on it, RFC 9113 §3.3) or a TLS stream
whose ALPN offered only ``h2`` and whose server selected it (else a clear error: speaking
HTTP/2 to an HTTP/1.1 server fails later and obscurely). TLS policy and verification are the
h1 backends' (``workers/tls_context``), plus ALPN on a context of our own: that module caches
one context per setting and ALPN must not leak into the h1 backends'. Must never pool.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Sequence

import trio

from gateway.config.plan import BackendPlan
from gateway.config.schema import BackendTlsConfig
from gateway.errors import UpstreamConnectError, UpstreamError
from workers.dial import dial_backend
from workers.http1.backend import Backend, Connect, ConnectFailed
from workers.tls_context import TLS12_CIPHERS, backend_server_name

ALPN_H2 = "h2"


@functools.lru_cache(maxsize=64)
def h2_backend_context(tls: BackendTlsConfig) -> ssl.SSLContext:
    """The h1 backends' client policy (``tls_context.backend_context``) offering ALPN h2."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN_H2])
    return ctx


async def open_h2_backend_stream(backend: BackendPlan) -> trio.abc.Stream:
    """TCP (the caller bounds the time), then TLS + ALPN h2 when the plan has ``tls``."""
    sock = await dial_backend(backend, timeout_s=math.inf)
    if backend.tls is None:
        return trio.SocketStream(sock)
    try:
        context = h2_backend_context(backend.tls)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise UpstreamConnectError("tls_config", f"{backend.id}: {exc}") from None
    stream = trio.SSLStream(
        trio.SocketStream(sock),
        context,
        server_hostname=backend_server_name(backend.tls, backend.host),
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        sock.close()
        cause = exc.__cause__
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
        raise UpstreamConnectError("tls_handshake", f"{backend.id}: {reason}") from None
    except BaseException:
        sock.close()
        raise
    selected = stream.selected_alpn_protocol()
    if selected != ALPN_H2:
        sock.close()
        raise UpstreamConnectError(
            "alpn",
            f"{backend.id}: protocol = 'h2' but the backend's TLS did not select h2 via ALPN "
            f"(selected {selected or 'nothing'})",
        )
    return stream


def h2_connect(backends: Sequence[BackendPlan]) -> Connect:
    """The ``connect`` for ``H2Back``: ``Backend.id`` → its plan → a stream; errors typed."""
    plans = {b.id: b for b in backends}

    async def connect(backend: Backend) -> trio.abc.Stream:
        try:
            return await open_h2_backend_stream(plans[backend.id])
        except UpstreamError as exc:
            raise ConnectFailed(str(exc), kind=exc.kind) from None

    return connect
