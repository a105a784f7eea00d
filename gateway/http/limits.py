"""HTTP data-path limits with the original ExpressGateway defaults.

Owns the numbers (timeouts, caps, pool sizes, WebSocket knobs) and nothing else. Must never
read config files; the config compiler builds these from the TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.http.forwarding import ForwardingPolicy
from gateway.http.lingering_close import LingerLimits
from gateway.http.retry_budget import RetryBudgetLimits

UnderscorePolicy = Literal["reject", "drop", "allow"]

# The largest chunk an HTTP/2 upstream body hands the core at once (queued DATA frames
# coalesce up to it: one write to the client for a run of them).
BODY_CHUNK_MAX_BYTES = 64 * 1024
# One read from a socket on the H1 path; also bounds what one parser feed can queue.
READ_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_idle_per_backend: int = 8
    max_per_backend: int = 256
    # WebSocket tunnels and streamed uploads: a budget of their own (issue 17 item 8).
    max_tunnels_per_backend: int = 256
    idle_timeout_s: float = 60.0
    connect_timeout_ms: int = 5000
    # Total upstream attempts for one request (first try + retries), retries only when safe.
    max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    enabled: bool = True  # false: upgrades are not intercepted (served as plain HTTP)
    idle_timeout_s: float = 60.0
    max_message_size_bytes: int = 16 * 1024 * 1024
    # Client pings (each one the backend answers): more within the window closes with 1008.
    max_pings_per_window: int = 50
    ping_window_s: float = 10.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    total_timeout_ms: int = 60_000
    head_timeout_ms: int = 60_000
    # A gRPC call's grpc-timeout is clamped to this (it replaces total_timeout_ms for the call).
    grpc_max_deadline_ms: int = 300_000
    # A request body up to this size is kept while an attempt sends it, so a backend that
    # refuses the stream unprocessed (REFUSED_STREAM, GOAWAY) does not end the retries.
    retry_buffer_bytes: int = 65_536
    max_body_bytes: int = 64 * 1024 * 1024
    max_headers: int = 256
    max_header_bytes: int = 65_536
    underscore_policy: UnderscorePolicy = "reject"
    max_keepalive_requests: int = 100
    strict_te: bool = False
    websocket: WebSocketLimits = field(default_factory=WebSocketLimits)
    pool: PoolLimits = field(default_factory=PoolLimits)
    linger: LingerLimits = field(default_factory=LingerLimits)
    retry_budget: RetryBudgetLimits = field(default_factory=RetryBudgetLimits)
    forwarding: ForwardingPolicy = field(default_factory=ForwardingPolicy)

    def __post_init__(self) -> None:
        if self.underscore_policy not in ("reject", "drop", "allow"):
            raise ValueError(f"underscore_policy: {self.underscore_policy!r}")


@dataclass(frozen=True, slots=True)
class H2Limits:
    """HTTP/2 front settings and flood thresholds (``[listeners.h2]``, the original's
    ``h2_security`` defaults)."""

    max_concurrent_streams: int = 256
    initial_stream_window_size: int = 1_048_576
    initial_connection_window_size: int = 1_048_576
    max_header_list_size: int = 65_536
    max_frame_size: int = 16_384
    keepalive_interval_s: float = 30.0  # 0: no PINGs
    keepalive_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0  # no stream open: GOAWAY and close
    # SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): WebSocket over HTTP/2 streams.
    enable_connect_protocol: bool = True
    # Floods: more than this many of a kind within flood_window_s → GOAWAY ENHANCE_YOUR_CALM.
    flood_window_s: float = 10.0
    max_resets_per_window: int = 100  # rapid reset (CVE-2023-44487): client resets
    max_pings_per_window: int = 50
    max_settings_per_window: int = 100
    max_empty_data_per_window: int = 100
    max_priority_per_window: int = 500
    max_refused_per_window: int = 100  # streams we refused (over the concurrency limit)
    # On h1 listeners: serve a connection that opens with the HTTP/2 preface as HTTP/2.
    prior_knowledge: bool = True
