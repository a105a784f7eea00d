"""Dialling an HTTP/3 backend: its QUIC client configuration, built at boot, and a UDP socket.

Owns, per ``protocol = "h3"`` backend: the ``QuicConfiguration`` (ALPN ``h3``; certificate
verification on unless the backend's ``tls`` table says ``verify = false``, against its
``ca_path`` or the system CAs; SNI and the checked name ``server_name`` or the backend's host;
our receive windows from ``gateway/http/h3_upstream``), built when the worker boots: the CA
file is read then, before the worker gives up its privileges, and a bad one fails the boot.
Then, per connection, a non-blocking UDP socket connected to the backend (so the kernel reports a dead
port as ECONNREFUSED on the socket). Failures raise ``ConnectFailed`` / ``LocalExhausted``
like the TCP dialers. Must never pool or speak QUIC.
"""

from __future__ import annotations

import socket as stdsocket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from gateway.config.plan import BackendPlan
from gateway.errors import LOCAL_EXHAUSTION_ERRNOS
from gateway.http.errors import LocalExhausted
from gateway.http.h3_upstream import (
    CONNECTION_WINDOW_BYTES,
    QUIC_IDLE_TIMEOUT_S,
    STREAM_WINDOW_BYTES,
)
from workers.http1.backend import Backend, ConnectFailed


def quic_client_config(backend: BackendPlan) -> QuicConfiguration:
    """The client configuration for one h3 backend; reads its CA file now (OSError or
    ValueError when it is unreadable or holds no certificate)."""
    tls = backend.tls
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=QUIC_IDLE_TIMEOUT_S,
        max_data=CONNECTION_WINDOW_BYTES,
        max_stream_data=STREAM_WINDOW_BYTES,
        server_name=(tls.server_name if tls is not None else None) or backend.host,
    )
    if tls is not None and not tls.verify:
        # Explicitly configured (and warned about at start by supervisor/preflight.py).
        config.verify_mode = ssl.CERT_NONE
    else:
        config.verify_mode = ssl.CERT_REQUIRED
        if tls is not None and tls.ca_path:
            with open(tls.ca_path, "rb") as fh:
                cadata = fh.read()
            if b"-----BEGIN CERTIFICATE-----" not in cadata:
                raise ValueError(
                    f"{backend.id}: tls.ca_path {tls.ca_path!r} holds no PEM certificate"
                )
            config.cadata = cadata
    return config


@dataclass(frozen=True, slots=True)
class H3Endpoint:
    host: str
    port: int
    config: QuicConfiguration


class H3Dialer:
    """What ``H3Back`` dials: ``Backend.id`` → its address and QUIC configuration."""

    def __init__(self, backends: Sequence[BackendPlan]) -> None:
        self.endpoints = {
            b.id: H3Endpoint(b.host, b.port, quic_client_config(b))
            for b in backends
            if b.protocol == "h3"
        }

    def config_for(self, backend: Backend) -> QuicConfiguration:
        found = self.endpoints.get(backend.id)
        if found is not None:
            return found.config
        # A backend the plan did not describe (tests build adapters by hand): verify against
        # the system CAs, as a tls table with defaults would.
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=list(H3_ALPN),
            idle_timeout=QUIC_IDLE_TIMEOUT_S,
            max_data=CONNECTION_WINDOW_BYTES,
            max_stream_data=STREAM_WINDOW_BYTES,
            server_name=backend.host,
        )
        return config

    async def open_socket(self, backend: Backend) -> stdsocket.socket:
        """A non-blocking UDP socket connected to the backend (the connection reads and
        writes it directly, several datagrams per wake-up); the caller bounds the time."""
        try:
            infos = await trio.socket.getaddrinfo(
                backend.host, backend.port, type=stdsocket.SOCK_DGRAM
            )
        except OSError as exc:
            raise ConnectFailed(f"resolve {backend.id}: {exc}", kind="resolve") from None
        last: OSError | None = None
        for family, type_, proto, _canon, sockaddr in infos:
            try:
                sock = stdsocket.socket(family, type_, proto)
                sock.setblocking(False)
            except OSError as exc:
                if exc.errno in LOCAL_EXHAUSTION_ERRNOS:
                    raise LocalExhausted(f"connect to {backend.id}: {exc.strerror}") from None
                last = exc
                continue
            try:
                sock.connect(sockaddr)  # UDP: sets the peer, never blocks
                return sock
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        detail = last.strerror if last is not None else "no address"
        raise ConnectFailed(f"connect to {backend.id}: {detail}")


def h3_dialer(backends: Sequence[BackendPlan]) -> H3Dialer:
    return H3Dialer(backends)
