"""Validation of the tables of HTTP listeners: TLS with SNI certificates and ALPN, the HTTP
limits with the forwarding policy, and the HTTP/2 front's settings.

Part of step 2 (``validate``), split out by concept; every rule names the key path, the bad
value and what is allowed. Pure: checks that need files belong to the supervisor's preflight.
"""

from __future__ import annotations

import ipaddress
import re

from gateway.config.collector import Collector
from gateway.config.schema import DEFAULT_ALPN, ListenerConfig
from gateway.quic_retry_token import RETRY_MODES

ALPN_PROTOCOLS = ("h2", "http/1.1")
# Listeners that choose a certificate by SNI among several.
SNI_PROTOCOLS = ("h1s", "quic")
_H2_WINDOW_MAX = 2**31 - 1  # RFC 9113 §6.9.1
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$")


def listener_tls(lst: ListenerConfig, path: str, c: Collector) -> None:
    """ALPN and the SNI certificates: h1s only; every server name valid and claimed once."""
    tls = lst.tls
    assert tls is not None
    if lst.protocol not in SNI_PROTOCOLS:
        for key, value, default in (
            ("alpn", tls.alpn, list(DEFAULT_ALPN)),
            ("server_names", tls.server_names, []),
            ("certificates", tls.certificates, []),
        ):
            if value != default:
                where = "h1s listeners" if key == "alpn" else "h1s and quic listeners"
                c.add(f"{path}.{key}", f"only allowed on {where}, not {lst.protocol!r}")
        return
    if lst.protocol == "quic":
        if tls.alpn != list(DEFAULT_ALPN):
            c.add(f"{path}.alpn", "a quic listener always offers 'h3' and takes no alpn key")
    elif "http/1.1" not in tls.alpn:
        c.add(
            f"{path}.alpn",
            f"must include 'http/1.1' (a client without ALPN is served HTTP/1.1 anyway); "
            f"allowed: ['h2', 'http/1.1'] or ['http/1.1'], got {tls.alpn!r}",
        )
    for k, proto in enumerate(tls.alpn if lst.protocol == "h1s" else []):
        if proto not in ALPN_PROTOCOLS:
            c.add(
                f"{path}.alpn[{k}]",
                f"must be one of {', '.join(repr(p) for p in ALPN_PROTOCOLS)}, got {proto!r}",
            )
        elif proto in tls.alpn[:k]:
            c.add(f"{path}.alpn[{k}]", f"{proto!r} is listed twice")
    claimed: dict[str, str] = {}
    _server_names(tls.server_names, f"{path}.server_names", claimed, c)
    for k, cert in enumerate(tls.certificates):
        cp = f"{path}.certificates[{k}]"
        if not cert.server_names:
            c.add(
                f"{cp}.server_names",
                "a certificate needs at least one server name (SNI selects it by name; "
                "the top-level cert_path is the default for everything else)",
            )
        _server_names(cert.server_names, f"{cp}.server_names", claimed, c)


def _server_names(names: list[str], path: str, claimed: dict[str, str], c: Collector) -> None:
    for k, raw in enumerate(names):
        where = f"{path}[{k}]"
        problem = server_name_problem(raw)
        if problem:
            c.add(where, problem)
            continue
        name = raw.lower().rstrip(".")
        if name in claimed:
            c.add(where, f"server name {raw!r} is claimed twice (also {claimed[name]})")
        else:
            claimed[name] = where


def server_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an SNI server name, or None (RFC 6066 §3, RFC 6125 §6.4.3)."""
    allowed = "a DNS name such as example.com or a wildcard such as *.example.com"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"must be {allowed} (SNI carries no IP addresses), got {name!r}"
    base = name.rstrip(".")
    wildcard = base.startswith("*.")
    if wildcard:
        base = base[2:]
    if len(base) > 253 or not _DNS_NAME.match(base):
        return f"must be {allowed}, got {name!r}"
    if wildcard and "." not in base:
        return f"a wildcard needs at least two labels after '*.', got {name!r}"
    return None


def http_limits(lst: ListenerConfig, path: str, c: Collector) -> None:
    h = lst.http
    assert h is not None
    for key in ("header_timeout_ms", "body_timeout_ms", "total_timeout_ms", "head_timeout_ms"):
        c.in_range(f"{path}.{key}", getattr(h, key), 1, 3_600_000)
    c.in_range(f"{path}.pool_idle_timeout_ms", h.pool_idle_timeout_ms, 1, 3_600_000)
    c.in_range(f"{path}.grpc_max_deadline_ms", h.grpc_max_deadline_ms, 1, 86_400_000)
    c.in_range(f"{path}.retry_buffer_bytes", h.retry_buffer_bytes, 0, 16 << 20)
    c.in_range(f"{path}.max_body_bytes", h.max_body_bytes, 1, 1 << 40)
    c.in_range(f"{path}.max_headers", h.max_headers, 1, 10_000)
    c.in_range(f"{path}.max_header_bytes", h.max_header_bytes, 1_024, 1 << 20)
    c.in_range(f"{path}.pool_max_per_backend", h.pool_max_per_backend, 1, 100_000)
    c.in_range(f"{path}.pool_max_tunnels_per_backend", h.pool_max_tunnels_per_backend, 1, 100_000)
    c.in_range(
        f"{path}.pool_max_idle_per_backend", h.pool_max_idle_per_backend, 0, h.pool_max_per_backend
    )
    c.in_range(f"{path}.retry_budget_percent", h.retry_budget_percent, 0, 100)
    c.in_range(f"{path}.retry_budget_min_concurrency", h.retry_budget_min_concurrency, 0, 100_000)
    _forwarding(h.forwarded_headers, h.trusted_proxies, path, c)


def _forwarding(mode: str, trusted: list[str], path: str, c: Collector) -> None:
    for i, cidr in enumerate(trusted):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            c.add(
                f"{path}.trusted_proxies[{i}]",
                f"must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32, got {cidr!r}",
            )
    if mode == "trusted" and not trusted:
        c.add(
            f"{path}.trusted_proxies",
            'forwarded_headers = "trusted" needs at least one proxy CIDR here '
            '(with none, use "replace")',
        )
    elif mode != "trusted" and trusted:
        c.add(
            f"{path}.trusted_proxies",
            f'is used only with forwarded_headers = "trusted", not {mode!r}',
        )


def h2_limits(lst: ListenerConfig, path: str, c: Collector) -> None:
    h = lst.h2
    assert h is not None
    c.in_range(f"{path}.max_concurrent_streams", h.max_concurrent_streams, 1, 1_000_000)
    c.in_range(
        f"{path}.initial_stream_window_size", h.initial_stream_window_size, 1, _H2_WINDOW_MAX
    )
    c.in_range(
        f"{path}.initial_connection_window_size",
        h.initial_connection_window_size,
        65_535,
        _H2_WINDOW_MAX,
    )
    c.in_range(f"{path}.max_header_list_size", h.max_header_list_size, 1_024, 1 << 24)
    # RFC 9113 §6.5.2 allows 2^14..2^24-1; h2 buffers up to 64 CONTINUATION frames of this
    # size before it refuses a header block, so the cap bounds that at 4 MiB a connection.
    c.in_range(f"{path}.max_frame_size", h.max_frame_size, 16_384, 65_536)
    c.in_range(
        f"{path}.keepalive_interval_ms", h.keepalive_interval_ms, 1_000, 3_600_000, zero_ok=True
    )
    for key in ("keepalive_timeout_ms", "idle_timeout_ms", "flood_window_ms"):
        c.in_range(f"{path}.{key}", getattr(h, key), 100, 3_600_000)
    for key in (
        "max_resets_per_window",
        "max_pings_per_window",
        "max_settings_per_window",
        "max_empty_data_per_window",
        "max_priority_per_window",
        "max_refused_per_window",
    ):
        c.in_range(f"{path}.{key}", getattr(h, key), 1, 1_000_000)


def h3_limits(lst: ListenerConfig, path: str, c: Collector) -> None:
    h = lst.h3
    assert h is not None
    c.in_range(f"{path}.max_concurrent_streams", h.max_concurrent_streams, 1, 10_000)
    c.in_range(f"{path}.initial_stream_window_size", h.initial_stream_window_size, 16_384, 1 << 30)
    c.in_range(
        f"{path}.initial_connection_window_size",
        h.initial_connection_window_size,
        h.initial_stream_window_size,
        1 << 30,
    )
    c.in_range(f"{path}.idle_timeout_ms", h.idle_timeout_ms, 1_000, 3_600_000)
    if h.retry not in RETRY_MODES:
        allowed = ", ".join(repr(m) for m in RETRY_MODES)
        c.add(f"{path}.retry", f"must be one of {allowed}, got {h.retry!r}")
    c.in_range(f"{path}.retry_new_connections_per_s", h.retry_new_connections_per_s, 1, 1_000_000)
    c.in_range(
        f"{path}.max_requests_per_connection",
        h.max_requests_per_connection,
        1,
        100_000_000,
        zero_ok=True,
    )
    c.in_range(f"{path}.max_field_section_size", h.max_field_section_size, 1_024, 1 << 24)
    c.in_range(f"{path}.qpack_max_table_capacity", h.qpack_max_table_capacity, 0, 65_536)
    c.in_range(f"{path}.qpack_blocked_streams", h.qpack_blocked_streams, 0, 1_000)


def alt_svc(listeners: list[ListenerConfig], c: Collector) -> None:
    """``alt_svc`` on an h1s listener names a quic listener of the same config."""
    quic = {lst.name for lst in listeners if lst.protocol == "quic"}
    for i, lst in enumerate(listeners):
        if lst.alt_svc is None:
            continue
        path = f"listeners[{i}].alt_svc"
        if lst.protocol != "h1s":
            c.add(path, f"only allowed on h1s listeners, not {lst.protocol!r}")
        elif lst.alt_svc not in quic:
            names = ", ".join(repr(n) for n in sorted(quic)) or "none in this config"
            c.add(path, f"must name a quic listener (allowed: {names}), got {lst.alt_svc!r}")
