"""The configuration schema: frozen msgspec Structs that forbid unknown keys.

This is the single source of truth for every key, its type and its default. Key
names and defaults follow the original ExpressGateway where it has them, so its
operators feel at home. Range and cross-field rules live in `validate.py`; nothing
here opens a file or a socket.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ListenerProtocol = Literal["tcp", "udp", "tls", "h1", "h1s", "quic", "quic_passthrough"]
BackendProtocol = Literal["tcp", "udp", "h1", "h2", "h3"]
PolicyName = Literal[
    "round_robin",
    "weighted_round_robin",
    "random",
    "weighted_random",
    "least_connections",
    "least_request",
    "p2c",
    "ewma",
    "maglev",
    "ring_hash",
    "session_affinity",
]
HealthKind = Literal["tcp", "http", "grpc"]
LogFormat = Literal["auto", "json", "console"]
KernelMode = Literal["auto", "native", "generic"]
UnderscorePolicy = Literal["reject", "drop", "allow"]
ForwardedHeaders = Literal["append", "replace", "trusted"]
ProxyProtocol = Literal["none", "v1", "v2"]

# What an h1s listener offers in ALPN when `alpn` is not written (server's preference first).
DEFAULT_ALPN = ("h2", "http/1.1")

_STRUCT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}


class RuntimeConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    workers: int | str | list[int] = "auto"
    drain_timeout_ms: int = 10_000
    connect_timeout_ms: int = 5_000
    handshake_timeout_ms: int = 5_000
    worker_boot_timeout_ms: int = 10_000
    control_socket: str = "/run/expressgateway/control.sock"
    per_ip_connection_cap: int = 1_024
    per_ip_ipv6_prefix: int = 64  # IPv6 clients share the per-IP cap per /64 (one host's net)
    max_inflight_connections: int | str = "auto"  # "auto": sized from RLIMIT_NOFILE
    max_keepalive_requests: int = 100
    header_underscore_policy: UnderscorePolicy = "reject"
    worker_user: str = "nobody"  # workers switch to it when the supervisor runs as root
    worker_heartbeat_timeout_ms: int = 10_000
    worker_zygote: bool = True  # workers are forked from a pre-imported template process
    max_draining_generations: int = 8  # past it the oldest draining generation stops now


class ObservabilityConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    metrics_bind: str | None = None
    log_format: LogFormat = "auto"
    access_log: bool = True
    access_log_flush_ms: int = 250  # longest an access line waits in a worker's buffer
    max_series_per_family: int = 10_000


class AdminConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    api_token_hash: str | None = None
    allow_non_loopback: bool = False


class SecurityConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    strict_te: bool = False


class KernelConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    enabled: bool = False
    interfaces: list[str] = msgspec.field(default_factory=list)
    mode: KernelMode = "auto"
    required: bool = False
    instance: str = "default"
    new_flow_cap_per_sec: int = 0
    new_flow_ipv6_prefix: int = 64  # IPv6 sources share the new-flow cap per /64
    deny: list[str] = msgspec.field(default_factory=list)


class TlsCertificateConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    """One more certificate of an `h1s` listener, chosen by SNI for its server names."""

    server_names: list[str]
    cert_path: str
    key_path: str


class TlsConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    # The default certificate: served without SNI, for an unknown name, and for server_names.
    cert_path: str
    key_path: str
    tls13_only: bool = False
    # h1s and quic: the names the default certificate serves (so a 421 can tell them apart).
    server_names: list[str] = msgspec.field(default_factory=list)
    # h1s only: ALPN protocols offered, in the server's order of preference.
    alpn: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ALPN))
    # h1s and quic: further certificates selected by SNI.
    certificates: list[TlsCertificateConfig] = msgspec.field(default_factory=list)


class BackendTlsConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    ca_path: str | None = None
    server_name: str | None = None
    verify: bool = True


class BalancerConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    policy: PolicyName = "round_robin"
    hash_key: str | None = None  # the plan applies "client_ip" for hash policies
    max_connect_attempts: int = 3
    panic_threshold: int = 50
    ewma_decay_ms: int = 10_000


class HealthConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    kind: HealthKind = "tcp"
    interval_ms: int = 2_000
    timeout_ms: int = 1_000
    rise: int = 2
    fall: int = 3
    path: str = "/"
    expected_status: str = "200-399"
    host: str | None = None
    grpc_service: str = ""  # kind = "grpc": the service name asked of grpc.health.v1.Health


class OutlierConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    consecutive_failures: int = 5
    base_ejection_ms: int = 30_000
    max_ejection_ms: int = 300_000
    max_ejection_percent: int = 50


class HttpConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    total_timeout_ms: int = 60_000
    head_timeout_ms: int = 60_000
    grpc_max_deadline_ms: int = 300_000
    retry_buffer_bytes: int = 65_536
    max_body_bytes: int = 64 * 1024 * 1024
    max_headers: int = 256
    max_header_bytes: int = 65_536
    pool_max_idle_per_backend: int = 8
    pool_max_per_backend: int = 256
    pool_max_tunnels_per_backend: int = 256
    pool_idle_timeout_ms: int = 60_000
    # H1 clients to H1-only backends take the dedicated HTTP/1.1 path (same behaviour as the
    # general proxy core, less CPU); false sends them through the general core.
    h1_fast_path: bool = True
    retry_budget_percent: int = 20
    retry_budget_min_concurrency: int = 3
    forwarded_headers: ForwardedHeaders = "append"
    trusted_proxies: list[str] = msgspec.field(default_factory=list)


class H2Config(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    """The HTTP/2 front of h1 (prior knowledge) and h1s (ALPN) listeners."""

    prior_knowledge: bool = True
    max_concurrent_streams: int = 256
    initial_stream_window_size: int = 1_048_576
    initial_connection_window_size: int = 1_048_576
    max_header_list_size: int = 65_536
    max_frame_size: int = 16_384
    keepalive_interval_ms: int = 30_000
    keepalive_timeout_ms: int = 30_000
    idle_timeout_ms: int = 60_000
    enable_connect_protocol: bool = True
    flood_window_ms: int = 10_000
    max_resets_per_window: int = 100
    max_pings_per_window: int = 50
    max_settings_per_window: int = 100
    max_empty_data_per_window: int = 100
    max_priority_per_window: int = 500
    max_refused_per_window: int = 100


class H3Config(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    """The HTTP/3 front of quic listeners."""

    max_concurrent_streams: int = 100
    initial_stream_window_size: int = 262_144
    initial_connection_window_size: int = 1_048_576
    idle_timeout_ms: int = 30_000
    # Address validation (RFC 9000 §8.1): "always", "never" or "above_rate" (a Retry round
    # trip once a worker's listener opens retry_new_connections_per_s connections a second).
    retry: str = "above_rate"
    retry_new_connections_per_s: int = 200
    # 0-RTT: session tickets issued (single use, per worker) and early data accepted, only
    # safe methods served from it (others get 425 Too Early).
    early_data: bool = False
    # Requests served on one connection before it is recycled (GOAWAY, then closed once its
    # streams are done); 0: no cap.
    max_requests_per_connection: int = 10_000
    # WebSocket over HTTP/3 (RFC 9220): SETTINGS_ENABLE_CONNECT_PROTOCOL announced and an
    # extended CONNECT with :protocol = websocket tunnelled (needs [listeners.websocket] on).
    enable_connect_protocol: bool = True
    # QPACK (RFC 9204) and the request field section cap (RFC 9114 §4.2.2), announced in
    # SETTINGS and enforced before a section is decoded (a larger request gets 431).
    max_field_section_size: int = 65_536
    qpack_max_table_capacity: int = 4_096
    qpack_blocked_streams: int = 16


class WebSocketConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    enabled: bool = True
    idle_timeout_seconds: int = 60


class RelayConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    idle_timeout_ms: int = 3_600_000
    tcp_keepalive: bool = True
    keepalive_idle_seconds: int = 60
    keepalive_interval_seconds: int = 10
    keepalive_probes: int = 6


class UdpConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    session_idle_timeout_ms: int = 30_000
    max_sessions: int = 65_536
    # udp listeners only (the plan applies UDP_* defaults below; 0 turns each off)
    new_sessions_per_source_per_s: int | None = None
    reply_amplification_factor: int | None = None


UDP_NEW_SESSIONS_PER_SOURCE_PER_S = 200
UDP_REPLY_AMPLIFICATION_FACTOR = 10


class QuicLbConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    server_id_len: int
    config_id: int = 0
    server_id_offset: int = 1


class QuicPassthroughConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    min_client_dcid_len: int = 8
    server_cid_len: int = 8
    max_routes: int = 100_000
    route_idle_timeout_ms: int = 60_000
    new_connections_per_source_per_s: int = 100
    quic_lb: QuicLbConfig | None = None


class BackendConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    address: str
    protocol: BackendProtocol | None = None
    weight: int = 1
    tls: BackendTlsConfig | None = None
    proxy_protocol: ProxyProtocol = "none"
    quic_server_id: str | None = None  # hex; QUIC-LB server ID (quic_passthrough.quic_lb)


class ListenerConfig(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    name: str
    address: str
    protocol: ListenerProtocol
    drain_timeout_ms: int | None = None
    tls: TlsConfig | None = None
    balancer: BalancerConfig = msgspec.field(default_factory=BalancerConfig)
    health: HealthConfig | None = None
    outlier: OutlierConfig = msgspec.field(default_factory=OutlierConfig)
    http: HttpConfig | None = None
    h2: H2Config | None = None
    h3: H3Config | None = None
    # h1s only: the name of a quic listener announced in an Alt-Svc response field.
    alt_svc: str | None = None
    websocket: WebSocketConfig | None = None
    udp: UdpConfig | None = None
    quic_passthrough: QuicPassthroughConfig | None = None
    relay: RelayConfig | None = None
    backends: list[BackendConfig] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, **_STRUCT):  # type: ignore[call-arg]
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    kernel: KernelConfig = msgspec.field(default_factory=KernelConfig)
    listeners: list[ListenerConfig] = msgspec.field(default_factory=list)


# The protocol a backend speaks when the config does not say (the listener's natural peer).
NATURAL_BACKEND_PROTOCOL: dict[str, str] = {
    "tcp": "tcp",
    "udp": "udp",
    "tls": "tcp",
    "h1": "h1",
    "h1s": "h1",
    "quic": "h3",
    "quic_passthrough": "udp",
}

# Which backend protocols each listener protocol can reach.
ALLOWED_BACKEND_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "tcp": ("tcp",),
    "udp": ("udp",),
    "tls": ("tcp",),
    "h1": ("h1", "h2", "h3"),
    "h1s": ("h1", "h2", "h3"),
    "quic": ("h1", "h2", "h3"),
    "quic_passthrough": ("udp",),
}
