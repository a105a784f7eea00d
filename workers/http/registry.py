"""The registries of front and back adapters, keyed by protocol name.

Owns the mapping from a protocol name (gateway/http/versions) to the adapter that serves
it: FRONTS build a connection handler for a listener from its FrontKit; BACKS build the
upstream client of one backend protocol for a listener. Adding a protocol is one entry
here and one name there. Must never decide anything per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.http.h3_limits import H3Limits
from gateway.http.limits import H2Limits, HttpLimits
from workers.http.back import BackAdapter
from workers.http.context import ProxyContext
from workers.http.front import ClientConn, FrontHandler
from workers.http.h1_back import H1Back
from workers.http.h2_back import H2Back
from workers.http.h2_front import serve_h2_connection
from workers.http.h3_back import H3Back
from workers.http.h3_front import serve_h3_connection
from workers.http1.backend import Connect
from workers.http1.context import H1Context
from workers.http1.serve import serve_h1_connection


@dataclass(slots=True)
class FrontKit:
    """Everything the fronts of one listener share: the H1 connection loop's context, the
    proxy core's context and the HTTP/2 and HTTP/3 settings."""

    h1: H1Context
    proxy: ProxyContext
    h2: H2Limits
    h3: H3Limits = field(default_factory=H3Limits)


def _h1_front(kit: FrontKit) -> FrontHandler:
    async def serve(client: ClientConn) -> None:
        names = kit.h1.server_names  # TLS with several certificates (the 421 check)
        certificate = names.certificate_for_sni(client.sni) if names is not None else 0
        await serve_h1_connection(client.stream, kit.h1, client.client_ip, certificate)

    return serve


def _h2_front(kit: FrontKit) -> FrontHandler:
    async def serve(client: ClientConn) -> None:
        await serve_h2_connection(client, kit.proxy, kit.h2)

    return serve


def _h3_front(kit: FrontKit) -> Callable[[Any], Awaitable[None]]:
    """HTTP/3 is served on a QUIC session (workers/quic_listener.QuicSession), not a stream."""

    async def serve(session: Any) -> None:
        await serve_h3_connection(session, kit.proxy, kit.h3)

    return serve


# name -> the factory of a listener's handler: a ClientConn for h1 and h2, a QuicSession for h3
FRONTS: dict[str, Callable[[FrontKit], Callable[[Any], Awaitable[None]]]] = {
    "h1": _h1_front,
    "h2": _h2_front,
    "h3": _h3_front,
}

# (the listener's HTTP limits, how to open a stream to one of its backends) -> the adapter
BackFactory = Callable[[HttpLimits, Connect | None], BackAdapter]

BACKS: dict[str, BackFactory] = {"h1": H1Back, "h2": H2Back, "h3": H3Back}  # type: ignore[dict-item]
