"""The general HTTP proxy: one core for every front and back protocol.

Owns the neutral exchange (``core``), the body sources that carry bodies between adapters
(``body``), the back-adapter contract (``back``) and the registries of front and back
adapters keyed by protocol name (``registry``). Front adapters turn bytes or frames into a
neutral RequestHead + BodySource; back adapters turn one into an upstream exchange. The
H1→H1 fast path (workers/http1) is a named specialisation held to the same cell tests.
"""
