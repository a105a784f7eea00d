"""Which configurable features this build actually serves.

A key whose feature is not built is rejected by validation with a message that
says so: the gateway never silently accepts a setting it would ignore. Grow these
sets as data paths land; never add a key to the schema without either serving it
or listing it here.
"""

from __future__ import annotations

from gateway.http.versions import BACK_PROTOCOLS, built_listener_protocols

# L4 protocols are served by their relays; HTTP ones by the adapter registries.
BUILT_LISTENER_PROTOCOLS: frozenset[str] = (
    frozenset({"tcp", "udp", "tls", "quic_passthrough"}) | built_listener_protocols()
)
BUILT_BACKEND_PROTOCOLS: frozenset[str] = frozenset({"tcp", "udp"}) | BACK_PROTOCOLS
BUILT_PROXY_PROTOCOLS: frozenset[str] = frozenset({"none", "v1", "v2"})
BACKEND_TLS_BUILT = True
LISTENER_TLS_BUILT = True
WEBSOCKET_BUILT = True

NOT_BUILT_HINT = "is not built in this version of ExpressGateway"
