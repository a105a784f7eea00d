"""The HTTP versions this build speaks, on each side of the proxy core.

Owns the names the front and back adapter registries (workers/http/registry) are keyed by;
``gateway/config/features.py`` derives what a config may ask for from them, and a test holds
the registries to these names. Must never import an adapter.
"""

from __future__ import annotations

from typing import Final

# Client-side protocols a front adapter serves.
FRONT_PROTOCOLS: Final = frozenset(("h1", "h2", "h3"))
# Backend protocols a back adapter speaks.
BACK_PROTOCOLS: Final = frozenset(("h1", "h2", "h3"))
# Which fronts each HTTP listener protocol needs: h1 (cleartext, HTTP/2 by prior
# knowledge), h1s (TLS, ALPN h2 / http/1.1), quic (HTTP/3).
LISTENER_FRONTS: Final = {"h1": ("h1", "h2"), "h1s": ("h1", "h2"), "quic": ("h3",)}


def built_listener_protocols() -> frozenset[str]:
    return frozenset(p for p, fronts in LISTENER_FRONTS.items() if set(fronts) <= FRONT_PROTOCOLS)
