"""Step 3 of 4: a validated `Config` -> the `GatewayPlan` that runs.

The plan is what the supervisor acts on and what workers receive (msgspec-encoded
over the control channel): addresses parsed, defaults and inheritance applied,
CPUs resolved. Workers never read the config file. Pure: CPU facts are passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from gateway.config.address import parse_host_port
from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.schema import (
    NATURAL_BACKEND_PROTOCOL,
    UDP_NEW_SESSIONS_PER_SOURCE_PER_S,
    UDP_REPLY_AMPLIFICATION_FACTOR,
    BackendTlsConfig,
    BalancerConfig,
    Config,
    H2Config,
    H3Config,
    HealthConfig,
    HttpConfig,
    OutlierConfig,
    QuicPassthroughConfig,
    RelayConfig,
    TlsConfig,
    UdpConfig,
    WebSocketConfig,
)
from gateway.config.validate import (
    DATAGRAM_SESSIONS,
    H2_FRONT_PROTOCOLS,
    HASH_POLICIES,
    HTTP_PROTOCOLS,
    RELAY_PROTOCOLS,
    UDP_TRANSPORT,
    validate_config,
)
from gateway.http.server_names import normalise_name


class SocketKey(msgspec.Struct, frozen=True, array_like=True):
    """Identity of a listening socket: sockets with the same key survive a reload."""

    transport: str  # "tcp" | "udp"
    host: str
    port: int
    family: int  # 4 | 6


class BackendPlan(msgspec.Struct, frozen=True):
    id: str  # canonical "host:port", stable across reloads (hash policies key on it)
    host: str
    port: int
    protocol: str
    weight: int
    proxy_protocol: str
    tls: BackendTlsConfig | None = None  # TLS towards this backend (workers/tls_context.py)
    quic_server_id: str | None = None  # hex QUIC-LB server ID (quic_passthrough listeners)


class CertificatePlan(msgspec.Struct, frozen=True):
    cert_path: str
    key_path: str
    server_names: list[str]  # normalised (lowercase, no trailing dot); may be empty (default)


class ListenerTlsPlan(msgspec.Struct, frozen=True):
    """What a TLS-terminating HTTP listener's worker builds its SSLContexts from."""

    # certificates[0] is the default (the top-level cert_path/key_path); the rest are chosen
    # by SNI (gateway/http/server_names.py maps names to these indices).
    certificates: list[CertificatePlan]
    tls13_only: bool
    alpn: list[str]  # offered in this order of preference
    handshake_timeout_ms: int


class ListenerPlan(msgspec.Struct, frozen=True):
    name: str
    protocol: str
    socket: SocketKey
    drain_timeout_ms: int
    connect_timeout_ms: int
    balancer: BalancerConfig
    hash_key: str | None
    outlier: OutlierConfig
    health: HealthConfig | None
    http: HttpConfig | None
    h2: H2Config | None  # the HTTP/2 front of h1 and h1s listeners
    websocket: WebSocketConfig | None
    udp: UdpConfig | None  # udp and quic_passthrough; 0 = off for the udp-only guards
    backends: list[BackendPlan]
    quic_passthrough: QuicPassthroughConfig | None = None
    tls: ListenerTlsPlan | None = None  # h1s listeners (the tls listener still reads config)
    relay: RelayConfig | None = None  # tcp and tls listeners: idle timeout, TCP keepalive
    h3: H3Config | None = None  # the HTTP/3 front of quic listeners
    # h1s listeners with `alt_svc`: the Alt-Svc field value their responses carry.
    alt_svc: bytes | None = None


class GatewayPlan(msgspec.Struct, frozen=True):
    config_hash: str
    cpus: list[int]
    config: Config
    listeners: list[ListenerPlan]

    def sockets(self) -> list[SocketKey]:
        return [listener.socket for listener in self.listeners]


def config_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resolve_cpus(workers: int | str | list[int], online_cpus: Sequence[int]) -> list[int]:
    cpus = sorted(online_cpus)
    if isinstance(workers, str):
        return cpus
    if isinstance(workers, int):
        return cpus[:workers]
    return list(workers)


def plan_config(config: Config, *, online_cpus: Sequence[int], digest: str) -> GatewayPlan:
    """Derive the runtime plan from a config that `validate_config` accepted."""
    rt = config.runtime
    listeners: list[ListenerPlan] = []
    for lst in config.listeners:
        addr = parse_host_port(lst.address, allow_hostname=False)
        transport = "udp" if lst.protocol in UDP_TRANSPORT else "tcp"
        backends = []
        for b in lst.backends:
            baddr = parse_host_port(b.address, allow_hostname=True)
            backends.append(
                BackendPlan(
                    id=str(baddr),
                    host=baddr.host,
                    port=baddr.port,
                    protocol=b.protocol or NATURAL_BACKEND_PROTOCOL[lst.protocol],
                    weight=b.weight,
                    proxy_protocol=b.proxy_protocol,
                    tls=b.tls,
                    quic_server_id=b.quic_server_id,
                )
            )
        is_http = lst.protocol in HTTP_PROTOCOLS
        hash_key = None
        if lst.balancer.policy in HASH_POLICIES:
            hash_key = lst.balancer.hash_key or "client_ip"
        if lst.protocol == "quic_passthrough":
            hash_key = "quic_cid"
        listeners.append(
            ListenerPlan(
                name=lst.name,
                protocol=lst.protocol,
                socket=SocketKey(transport, addr.host, addr.port, addr.family),
                drain_timeout_ms=lst.drain_timeout_ms or rt.drain_timeout_ms,
                connect_timeout_ms=rt.connect_timeout_ms,
                balancer=lst.balancer,
                hash_key=hash_key,
                outlier=lst.outlier,
                health=lst.health,
                http=(lst.http or HttpConfig()) if is_http else None,
                h2=(lst.h2 or H2Config()) if lst.protocol in H2_FRONT_PROTOCOLS else None,
                websocket=lst.websocket,
                udp=_udp_sessions(lst.udp, lst.protocol),
                backends=backends,
                quic_passthrough=(
                    (lst.quic_passthrough or QuicPassthroughConfig())
                    if lst.protocol == "quic_passthrough"
                    else None
                ),
                tls=_listener_tls(lst.tls, rt.handshake_timeout_ms)
                if lst.protocol in ("h1s", "quic")
                else None,
                h3=(lst.h3 or H3Config()) if lst.protocol == "quic" else None,
                alt_svc=_alt_svc(lst.alt_svc, config),
                relay=(lst.relay or RelayConfig()) if lst.protocol in RELAY_PROTOCOLS else None,
            )
        )
    return GatewayPlan(
        config_hash=digest,
        cpus=resolve_cpus(rt.workers, online_cpus),
        config=config,
        listeners=listeners,
    )


def _udp_sessions(udp: UdpConfig | None, protocol: str) -> UdpConfig | None:
    """Sessions of datagram listeners with the udp-only guards resolved (0 = off)."""
    if protocol not in DATAGRAM_SESSIONS:
        return None
    u = udp or UdpConfig()
    if protocol != "udp":
        return msgspec.structs.replace(
            u, new_sessions_per_source_per_s=0, reply_amplification_factor=0
        )
    return msgspec.structs.replace(
        u,
        new_sessions_per_source_per_s=(
            UDP_NEW_SESSIONS_PER_SOURCE_PER_S
            if u.new_sessions_per_source_per_s is None
            else u.new_sessions_per_source_per_s
        ),
        reply_amplification_factor=(
            UDP_REPLY_AMPLIFICATION_FACTOR
            if u.reply_amplification_factor is None
            else u.reply_amplification_factor
        ),
    )


# How long a client may remember the HTTP/3 alternative (RFC 7838 §3 `ma`, one day).
ALT_SVC_MAX_AGE_S = 86_400


def _alt_svc(name: str | None, config: Config) -> bytes | None:
    """``h3=":PORT"; ma=...`` for the quic listener ``name`` (validated to exist)."""
    if name is None:
        return None
    for lst in config.listeners:
        if lst.name == name and lst.protocol == "quic":
            port = parse_host_port(lst.address, allow_hostname=False).port
            return b'h3=":%d"; ma=%d' % (port, ALT_SVC_MAX_AGE_S)
    return None


def _listener_tls(tls: TlsConfig | None, handshake_timeout_ms: int) -> ListenerTlsPlan:
    assert tls is not None  # validation requires [listeners.tls] on h1s listeners
    certificates = [
        CertificatePlan(tls.cert_path, tls.key_path, [normalise_name(n) for n in tls.server_names])
    ]
    for cert in tls.certificates:
        certificates.append(
            CertificatePlan(
                cert.cert_path, cert.key_path, [normalise_name(n) for n in cert.server_names]
            )
        )
    return ListenerTlsPlan(
        certificates=certificates,
        tls13_only=tls.tls13_only,
        alpn=list(tls.alpn),
        handshake_timeout_ms=handshake_timeout_ms,
    )


def compile_config(data: bytes, *, online_cpus: Sequence[int], source: str = "") -> GatewayPlan:
    """load -> validate -> plan in one call; raises ConfigError with every problem."""
    config = load_config(data, source)
    validate_config(
        config,
        online_cpus=online_cpus,
        source=source,
        lines=locate_lines(data.decode("utf-8")),
    )
    return plan_config(config, online_cpus=online_cpus, digest=config_hash(data))
