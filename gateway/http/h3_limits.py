"""The HTTP/3 front's settings (``[listeners.h3]`` of a ``quic`` listener), compiled.

Owns the values the QUIC listener and the H3 front read: the concurrency cap (the initial
MAX_STREAMS for request streams, and the active streams past which a request is refused
with H3_REQUEST_REJECTED), the flow-control windows extended only as the proxy core
consumes a body, the idle timeout aioquic enforces, whether extended CONNECT
(WebSocket over HTTP/3, RFC 9220) is offered, and the QPACK settings with the field
section cap. Must never import an adapter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class H3Limits:
    max_concurrent_streams: int = 100
    initial_stream_window_size: int = 262_144
    initial_connection_window_size: int = 1_048_576
    idle_timeout_s: float = 30.0
    retry: str = "above_rate"  # gateway.quic_retry_token.RETRY_MODES
    retry_new_connections_per_s: int = 200
    early_data: bool = False
    max_requests_per_connection: int = 10_000  # 0: no cap
    enable_connect_protocol: bool = True  # WebSocket over HTTP/3 (RFC 9220)
    max_field_section_size: int = 65_536  # SETTINGS_MAX_FIELD_SECTION_SIZE, enforced
    qpack_max_table_capacity: int = 4_096  # SETTINGS_QPACK_MAX_TABLE_CAPACITY
    qpack_blocked_streams: int = 16  # SETTINGS_QPACK_BLOCKED_STREAMS
