"""Step 2 of 4: semantic validation of a typed `Config`, every problem at once.

Pure: the machine facts it needs (which CPUs exist) are passed in. Each rule
names the key path, the bad value and what is allowed. Checks that need the
file system (certificates) belong to the supervisor's preflight, not here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from gateway.config import features
from gateway.config.address import AddressError, HostPort, parse_host_port
from gateway.config.collector import Collector
from gateway.config.schema import (
    ALLOWED_BACKEND_PROTOCOLS,
    NATURAL_BACKEND_PROTOCOL,
    Config,
    ListenerConfig,
    QuicPassthroughConfig,
)
from gateway.config.validate_http import (
    alt_svc,
    h2_limits,
    h3_limits,
    http_limits,
    listener_tls,
)
from gateway.errors import ConfigError, Problem

HASH_POLICIES = frozenset({"maglev", "ring_hash", "session_affinity"})
HTTP_PROTOCOLS = frozenset({"h1", "h1s", "quic"})
TLS_PROTOCOLS = frozenset({"tls", "h1s", "quic"})
UDP_TRANSPORT = frozenset({"udp", "quic", "quic_passthrough"})
DATAGRAM_SESSIONS = frozenset({"udp", "quic_passthrough"})  # [listeners.udp] sessions
RELAY_PROTOCOLS = frozenset({"tcp", "tls"})  # listeners served by the L4 byte relays
H2_FRONT_PROTOCOLS = frozenset({"h1", "h1s"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_STATUS_RANGE = re.compile(r"^([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?$")
_TOKEN_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# What an h1s listener may offer in ALPN (RFC 7301), in the default order of preference.


def validate_config(
    config: Config,
    *,
    online_cpus: Sequence[int],
    source: str = "",
    lines: dict[str, int] | None = None,
) -> None:
    """Raise ConfigError listing every semantic problem; return None when valid."""
    problems = collect_problems(config, online_cpus=online_cpus, lines=lines or {})
    if problems:
        raise ConfigError(problems, source)


def collect_problems(
    config: Config, *, online_cpus: Sequence[int], lines: dict[str, int]
) -> list[Problem]:
    c = Collector(lines)
    _runtime(config, online_cpus, c)
    _observability(config, c)
    _kernel(config, c)
    if not config.listeners:
        c.add("listeners", "at least one [[listeners]] entry is required")
    seen_names: dict[str, int] = {}
    seen_sockets: dict[tuple[str, str, int], int] = {}
    for i, listener in enumerate(config.listeners):
        path = f"listeners[{i}]"
        _listener(listener, path, c)
        if listener.name in seen_names:
            c.add(
                f"{path}.name",
                f"duplicate listener name {listener.name!r} (also listeners[{seen_names[listener.name]}])",
            )
        else:
            seen_names[listener.name] = i
        try:
            addr = parse_host_port(listener.address, allow_hostname=False)
        except AddressError:
            continue  # already reported by _listener
        transport = "udp" if listener.protocol in UDP_TRANSPORT else "tcp"
        for (t, host, port), j in seen_sockets.items():
            if t == transport and port == addr.port and _overlaps(host, addr.host):
                c.add(
                    f"{path}.address",
                    f"{listener.address!r} ({transport}) overlaps listeners[{j}].address; "
                    "each listener needs its own address and port",
                )
                break
        seen_sockets[(transport, addr.host, addr.port)] = i
    alt_svc(config.listeners, c)
    return c.problems


def _overlaps(a: str, b: str) -> bool:
    if a == b:
        return True
    wild = {"0.0.0.0", "::"}
    if a in wild or b in wild:
        fam_a = ipaddress.ip_address(a).version
        fam_b = ipaddress.ip_address(b).version
        # `[::]` also takes IPv4 unless IPV6_V6ONLY; we set V6ONLY, so families stay apart.
        return fam_a == fam_b
    return False


def _runtime(config: Config, online_cpus: Sequence[int], c: Collector) -> None:
    rt = config.runtime
    w = rt.workers
    if isinstance(w, bool):
        c.add("runtime.workers", f'must be "auto", a count, or a list of CPU ids, got {w!r}')
    elif isinstance(w, str):
        if w != "auto":
            c.add(
                "runtime.workers",
                f'must be "auto", a count 1..{len(online_cpus)}, or a list of CPU ids, got {w!r}',
            )
    elif isinstance(w, int):
        if not 1 <= w <= len(online_cpus):
            c.add(
                "runtime.workers",
                f"must be 1..{len(online_cpus)} (CPUs available to this process), got {w}",
            )
    else:
        if not w:
            c.add("runtime.workers", "the CPU list must not be empty")
        for cpu in w:
            if cpu not in online_cpus:
                c.add(
                    "runtime.workers",
                    f"CPU {cpu} is not available to this process; available: {sorted(online_cpus)}",
                )
        if len(set(w)) != len(w):
            c.add("runtime.workers", f"CPU ids must be distinct, got {w}")
    c.in_range("runtime.drain_timeout_ms", rt.drain_timeout_ms, 100, 300_000)
    c.in_range("runtime.connect_timeout_ms", rt.connect_timeout_ms, 100, 60_000)
    c.in_range("runtime.handshake_timeout_ms", rt.handshake_timeout_ms, 100, 60_000)
    c.in_range("runtime.worker_boot_timeout_ms", rt.worker_boot_timeout_ms, 1_000, 120_000)
    c.in_range("runtime.max_draining_generations", rt.max_draining_generations, 0, 1_000)
    c.in_range("runtime.per_ip_connection_cap", rt.per_ip_connection_cap, 1, 2_000_000)
    c.in_range("runtime.per_ip_ipv6_prefix", rt.per_ip_ipv6_prefix, 32, 128)
    inflight = rt.max_inflight_connections
    if isinstance(inflight, bool) or (isinstance(inflight, str) and inflight != "auto"):
        c.add(
            "runtime.max_inflight_connections",
            f'must be "auto" (sized from the open-files limit) or 100..2000000, got {inflight!r}',
        )
    elif isinstance(inflight, int):
        c.in_range("runtime.max_inflight_connections", inflight, 100, 2_000_000)
    c.in_range(
        "runtime.max_keepalive_requests", rt.max_keepalive_requests, 1, 10_000_000, zero_ok=True
    )
    c.in_range(
        "runtime.worker_heartbeat_timeout_ms", rt.worker_heartbeat_timeout_ms, 3_000, 600_000
    )
    if rt.worker_user and not _USER.match(rt.worker_user):
        c.add(
            "runtime.worker_user",
            f'must be a user name ([a-z_][a-z0-9_-]*, at most 32) or "" (keep the '
            f"supervisor's user), got {rt.worker_user!r}",
        )
    if rt.worker_user == "root":
        c.add("runtime.worker_user", 'must be an unprivileged user, got "root"')
    if not rt.control_socket.startswith("/"):
        c.add("runtime.control_socket", f"must be an absolute path, got {rt.control_socket!r}")
    elif len(rt.control_socket.encode()) > 107:
        c.add(
            "runtime.control_socket",
            f"a unix socket path must be at most 107 bytes, got {len(rt.control_socket.encode())}",
        )


def _observability(config: Config, c: Collector) -> None:
    obs, admin = config.observability, config.admin
    c.in_range("observability.max_series_per_family", obs.max_series_per_family, 100, 1_000_000)
    c.in_range("observability.access_log_flush_ms", obs.access_log_flush_ms, 1, 60_000)
    if admin.api_token_hash is not None and not _HEX64.match(admin.api_token_hash):
        c.add(
            "admin.api_token_hash",
            "must be the SHA-256 hex digest of the token (64 hex characters)",
        )
    if admin.allow_non_loopback and admin.api_token_hash is None:
        c.add(
            "admin.allow_non_loopback",
            "true requires admin.api_token_hash (the admin API would be open to the network)",
        )
    if obs.metrics_bind is None:
        return
    try:
        addr = parse_host_port(obs.metrics_bind, allow_hostname=False)
    except AddressError as exc:
        c.add("observability.metrics_bind", str(exc))
        return
    if not addr.is_loopback and not (admin.allow_non_loopback and admin.api_token_hash):
        c.add(
            "observability.metrics_bind",
            f"{obs.metrics_bind!r} is not a loopback address; set [admin] allow_non_loopback = true "
            "and api_token_hash to expose the admin listener",
        )


def _kernel(config: Config, c: Collector) -> None:
    k = config.kernel
    if k.enabled and not k.interfaces:
        c.add("kernel.interfaces", "must name at least one interface when kernel.enabled = true")
    for i, name in enumerate(k.interfaces):
        if not _IFNAME.match(name):
            c.add(
                f"kernel.interfaces[{i}]",
                f"{name!r} is not a valid interface name (1..15 chars, no '/', ':' or spaces)",
            )
        elif name in k.interfaces[:i]:
            c.add(f"kernel.interfaces[{i}]", f"{name!r} is listed twice")
    if k.enabled:
        _kernel_groups(config, c)
    if not _NAME.match(k.instance):
        c.add("kernel.instance", f"must match {_NAME.pattern}, got {k.instance!r}")
    c.in_range("kernel.new_flow_cap_per_sec", k.new_flow_cap_per_sec, 1, 10_000_000, zero_ok=True)
    c.in_range("kernel.new_flow_ipv6_prefix", k.new_flow_ipv6_prefix, 32, 128)
    for i, cidr in enumerate(k.deny):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            c.add(
                f"kernel.deny[{i}]",
                f"must be a CIDR such as 192.0.2.0/24 or 2001:db8::/32, got {cidr!r}",
            )


def _kernel_groups(config: Config, c: Collector) -> None:
    """The reuseport program keys groups by (port, transport, family), not by address."""
    seen: dict[tuple[str, int, int], int] = {}
    for i, lst in enumerate(config.listeners):
        try:
            addr = parse_host_port(lst.address, allow_hostname=False)
        except AddressError:
            continue  # reported by _listener
        transport = "udp" if lst.protocol in UDP_TRANSPORT else "tcp"
        key = (transport, addr.port, ipaddress.ip_address(addr.host).version)
        if key in seen:
            c.add(
                f"listeners[{i}].address",
                f"with kernel.enabled = true, listeners on one {transport} port and address "
                f"family must be a single listener (the kernel datapath steers by port, not "
                f"address); listeners[{seen[key]}] also uses port {addr.port}",
            )
        else:
            seen[key] = i


def _listener(lst: ListenerConfig, path: str, c: Collector) -> None:
    if not _NAME.match(lst.name):
        c.add(
            f"{path}.name",
            f"must be 1..63 characters of letters, digits, '_', '-', '.', got {lst.name!r}",
        )
    try:
        parse_host_port(lst.address, allow_hostname=False)
    except AddressError as exc:
        c.add(f"{path}.address", str(exc))
    if lst.protocol not in features.BUILT_LISTENER_PROTOCOLS:
        built = ", ".join(sorted(features.BUILT_LISTENER_PROTOCOLS))
        c.add(f"{path}.protocol", f"{lst.protocol!r} {features.NOT_BUILT_HINT}; available: {built}")
    if lst.drain_timeout_ms is not None:
        c.in_range(f"{path}.drain_timeout_ms", lst.drain_timeout_ms, 100, 300_000)
    _listener_blocks(lst, path, c)
    _balancer(lst, path, c)
    _health(lst, path, c)
    _backends(lst, path, c)


def _listener_blocks(lst: ListenerConfig, path: str, c: Collector) -> None:
    proto = lst.protocol
    if proto in TLS_PROTOCOLS and lst.tls is None:
        c.add(
            f"{path}.tls",
            f"a {proto!r} listener needs a [listeners.tls] table with cert_path and key_path",
        )
    if lst.tls is not None:
        if proto not in TLS_PROTOCOLS:
            c.add(f"{path}.tls", f"only allowed on tls, h1s and quic listeners, not {proto!r}")
        elif not features.LISTENER_TLS_BUILT:
            c.add(f"{path}.tls", f"TLS termination {features.NOT_BUILT_HINT}")
        else:
            listener_tls(lst, f"{path}.tls", c)
    if lst.http is not None:
        if proto not in HTTP_PROTOCOLS:
            c.add(f"{path}.http", f"only allowed on HTTP listeners (h1, h1s, quic), not {proto!r}")
        else:
            http_limits(lst, f"{path}.http", c)
    if lst.h2 is not None:
        if proto not in H2_FRONT_PROTOCOLS:
            c.add(f"{path}.h2", f"only allowed on h1 and h1s listeners, not {proto!r}")
        else:
            h2_limits(lst, f"{path}.h2", c)
    if lst.h3 is not None:
        if proto != "quic":
            c.add(f"{path}.h3", f"only allowed on quic listeners, not {proto!r}")
        else:
            h3_limits(lst, f"{path}.h3", c)
    if lst.websocket is not None:
        if proto not in HTTP_PROTOCOLS:
            c.add(
                f"{path}.websocket",
                f"only allowed on HTTP listeners (h1, h1s, quic), not {proto!r}",
            )
        elif not features.WEBSOCKET_BUILT:
            c.add(f"{path}.websocket", f"WebSocket proxying {features.NOT_BUILT_HINT}")
        else:
            c.in_range(
                f"{path}.websocket.idle_timeout_seconds",
                lst.websocket.idle_timeout_seconds,
                1,
                86_400,
            )
    if lst.relay is not None:
        if proto not in RELAY_PROTOCOLS:
            c.add(f"{path}.relay", f"only allowed on tcp and tls listeners, not {proto!r}")
        else:
            _relay(lst, f"{path}.relay", c)
    if lst.udp is not None:
        if proto not in DATAGRAM_SESSIONS:
            c.add(
                f"{path}.udp", f"only allowed on udp and quic_passthrough listeners, not {proto!r}"
            )
        else:
            _udp_sessions(lst, f"{path}.udp", c)
    if lst.quic_passthrough is not None and proto != "quic_passthrough":
        c.add(
            f"{path}.quic_passthrough",
            f"only allowed on quic_passthrough listeners, not {proto!r}",
        )
    elif proto == "quic_passthrough":
        _quic_passthrough(lst, path, c)


def _udp_sessions(lst: ListenerConfig, path: str, c: Collector) -> None:
    u = lst.udp
    assert u is not None
    c.in_range(f"{path}.session_idle_timeout_ms", u.session_idle_timeout_ms, 100, 3_600_000)
    c.in_range(f"{path}.max_sessions", u.max_sessions, 1, 10_000_000)
    if lst.protocol == "quic_passthrough":
        if u.new_sessions_per_source_per_s is not None:
            c.add(
                f"{path}.new_sessions_per_source_per_s",
                "not used by quic_passthrough listeners (a client's sessions follow its "
                "connections); set quic_passthrough.new_connections_per_source_per_s",
            )
        if u.reply_amplification_factor is not None:
            c.add(
                f"{path}.reply_amplification_factor",
                "not used by quic_passthrough listeners: the QUIC backend bounds what it "
                "sends to an unvalidated address (RFC 9000 §8.1), and after validation a "
                "download legitimately exceeds any fixed factor",
            )
        return
    if u.new_sessions_per_source_per_s is not None:
        c.in_range(
            f"{path}.new_sessions_per_source_per_s",
            u.new_sessions_per_source_per_s,
            1,
            1_000_000,
            zero_ok=True,
        )
    if u.reply_amplification_factor is not None:
        c.in_range(
            f"{path}.reply_amplification_factor",
            u.reply_amplification_factor,
            1,
            1_000,
            zero_ok=True,
        )


def _quic_passthrough(lst: ListenerConfig, path: str, c: Collector) -> None:
    q = lst.quic_passthrough or QuicPassthroughConfig()
    qp = f"{path}.quic_passthrough"
    c.in_range(f"{qp}.min_client_dcid_len", q.min_client_dcid_len, 8, 20)
    c.in_range(f"{qp}.server_cid_len", q.server_cid_len, 1, 20)
    c.in_range(f"{qp}.max_routes", q.max_routes, 1, 10_000_000)
    c.in_range(f"{qp}.route_idle_timeout_ms", q.route_idle_timeout_ms, 1_000, 3_600_000)
    c.in_range(
        f"{qp}.new_connections_per_source_per_s",
        q.new_connections_per_source_per_s,
        1,
        1_000_000,
        zero_ok=True,
    )
    b = lst.balancer
    if b.policy != "maglev":
        c.add(
            f"{path}.balancer.policy",
            f"quic_passthrough picks a new connection's backend by Maglev over its DCID, so "
            f'every worker and gateway agrees: set policy = "maglev", got {b.policy!r}',
        )
    if b.hash_key not in (None, "quic_cid"):
        c.add(
            f"{path}.balancer.hash_key",
            f'quic_passthrough hashes the Initial\'s DCID: leave it unset or "quic_cid", got {b.hash_key!r}',
        )
    lb = q.quic_lb
    if lb is not None:
        lp = f"{qp}.quic_lb"
        c.in_range(f"{lp}.config_id", lb.config_id, 0, 6)
        c.in_range(f"{lp}.server_id_len", lb.server_id_len, 1, 15)
        c.in_range(f"{lp}.server_id_offset", lb.server_id_offset, 1, 19)
        if lb.server_id_offset + lb.server_id_len > q.server_cid_len:
            c.add(
                f"{lp}.server_id_len",
                f"server_id_offset + server_id_len must fit in server_cid_len "
                f"({q.server_cid_len}), got {lb.server_id_offset} + {lb.server_id_len}",
            )
    seen: dict[bytes, int] = {}
    for j, backend in enumerate(lst.backends):
        bp = f"{path}.backends[{j}].quic_server_id"
        sid = backend.quic_server_id
        if lb is None:
            if sid is not None:
                c.add(bp, "needs [listeners.quic_passthrough.quic_lb] on its listener")
            continue
        if sid is None:
            c.add(bp, f"required on every backend with quic_lb: {lb.server_id_len} bytes in hex")
            continue
        try:
            raw = bytes.fromhex(sid)
        except ValueError:
            raw = b""
        if len(raw) != lb.server_id_len:
            c.add(
                bp,
                f"must be {lb.server_id_len} bytes in hex ({2 * lb.server_id_len} hex "
                f"digits, quic_lb.server_id_len), got {sid!r}",
            )
        elif raw in seen:
            c.add(bp, f"duplicate server ID {sid!r} (also backends[{seen[raw]}])")
        else:
            seen[raw] = j


def _relay(lst: ListenerConfig, path: str, c: Collector) -> None:
    r = lst.relay
    assert r is not None
    c.in_range(f"{path}.idle_timeout_ms", r.idle_timeout_ms, 100, 86_400_000, zero_ok=True)
    # Linux bounds: TCP_KEEPIDLE/TCP_KEEPINTVL 1..32767 s, TCP_KEEPCNT 1..127.
    c.in_range(f"{path}.keepalive_idle_seconds", r.keepalive_idle_seconds, 1, 32_767)
    c.in_range(f"{path}.keepalive_interval_seconds", r.keepalive_interval_seconds, 1, 32_767)
    c.in_range(f"{path}.keepalive_probes", r.keepalive_probes, 1, 127)


def _balancer(lst: ListenerConfig, path: str, c: Collector) -> None:
    b = lst.balancer
    bp = f"{path}.balancer"
    c.in_range(f"{bp}.max_connect_attempts", b.max_connect_attempts, 1, 10)
    c.in_range(f"{bp}.panic_threshold", b.panic_threshold, 0, 100)
    c.in_range(f"{bp}.ewma_decay_ms", b.ewma_decay_ms, 10, 600_000)
    if b.hash_key is None:
        return
    if b.policy not in HASH_POLICIES:
        c.add(
            f"{bp}.hash_key",
            f"is used only by the hash policies ({', '.join(sorted(HASH_POLICIES))}), not {b.policy!r}",
        )
        return
    problem = hash_key_problem(b.hash_key, lst.protocol)
    if problem:
        c.add(f"{bp}.hash_key", problem)


def hash_key_problem(spec: str, protocol: str) -> str | None:
    """Why `spec` is not a valid hash key for a listener of `protocol`, or None."""
    kind, _, arg = spec.partition(":")
    allowed = "client_ip, header:NAME, cookie:NAME, path, quic_cid"
    if kind in ("client_ip", "path", "quic_cid") and arg:
        return f"{kind!r} takes no argument; allowed: {allowed}; got {spec!r}"
    if kind in ("header", "cookie"):
        if not arg or not _TOKEN_HEADER.match(arg):
            return f"{kind}:NAME needs a valid name after the colon, got {spec!r}"
        if protocol not in HTTP_PROTOCOLS:
            return f"{spec!r} needs an HTTP listener, not {protocol!r}"
        return None
    if kind == "path":
        return (
            None
            if protocol in HTTP_PROTOCOLS
            else f"'path' needs an HTTP listener, not {protocol!r}"
        )
    if kind == "quic_cid":
        return (
            None
            if protocol in UDP_TRANSPORT
            else f"'quic_cid' needs a udp or quic listener, not {protocol!r}"
        )
    if kind == "client_ip":
        return None
    return f"must be one of {allowed}; got {spec!r}"


def _health(lst: ListenerConfig, path: str, c: Collector) -> None:
    h = lst.health
    o = lst.outlier
    op = f"{path}.outlier"
    c.in_range(f"{op}.consecutive_failures", o.consecutive_failures, 1, 1_000)
    c.in_range(f"{op}.base_ejection_ms", o.base_ejection_ms, 100, 3_600_000)
    c.in_range(f"{op}.max_ejection_ms", o.max_ejection_ms, 100, 86_400_000)
    if o.max_ejection_ms < o.base_ejection_ms:
        c.add(
            f"{op}.max_ejection_ms",
            f"must be >= base_ejection_ms ({o.base_ejection_ms}), got {o.max_ejection_ms}",
        )
    c.in_range(f"{op}.max_ejection_percent", o.max_ejection_percent, 0, 100)
    if h is None:
        return
    hp = f"{path}.health"
    if lst.protocol in DATAGRAM_SESSIONS:
        c.add(
            hp,
            f"active health checks are not available for {lst.protocol} listeners (the prober speaks "
            "tcp and http only); remove [listeners.health] — passive health "
            "([listeners.outlier]) still ejects backends that refuse datagrams",
        )
        return
    c.in_range(f"{hp}.interval_ms", h.interval_ms, 100, 3_600_000)
    c.in_range(f"{hp}.timeout_ms", h.timeout_ms, 10, 600_000)
    if h.timeout_ms > h.interval_ms:
        c.add(f"{hp}.timeout_ms", f"must be <= interval_ms ({h.interval_ms}), got {h.timeout_ms}")
    c.in_range(f"{hp}.rise", h.rise, 1, 100)
    c.in_range(f"{hp}.fall", h.fall, 1, 100)
    if h.kind == "http":
        if not h.path.startswith("/") or any(ch in h.path for ch in " \r\n\t"):
            c.add(f"{hp}.path", f"must be an origin-form path starting with '/', got {h.path!r}")
        if parse_status_ranges(h.expected_status) is None:
            c.add(
                f"{hp}.expected_status",
                f"must be a status or range list like '200', '200-399' or '200,204', got {h.expected_status!r}",
            )
        if h.host is not None and (not h.host or any(ch in h.host for ch in " \r\n\t,")):
            c.add(f"{hp}.host", f"must be a valid Host header value, got {h.host!r}")
    elif h.kind == "grpc":
        _grpc_health(lst, hp, c)
    elif (h.host is not None) or h.path != "/" or h.expected_status != "200-399":
        c.add(hp, 'path, expected_status and host apply only to kind = "http" checks')
    if h.kind != "grpc" and h.grpc_service:
        c.add(f"{hp}.grpc_service", 'applies only to kind = "grpc" checks')


def _grpc_health(lst: ListenerConfig, hp: str, c: Collector) -> None:
    """gRPC checks call grpc.health.v1.Health/Check over HTTP/2: h2 backends only."""
    h = lst.health
    assert h is not None
    if h.path != "/" or h.expected_status != "200-399":
        c.add(hp, 'path and expected_status do not apply to kind = "grpc" checks')
    if h.host is not None and (not h.host or any(ch in h.host for ch in " \r\n\t,")):
        c.add(f"{hp}.host", f"must be a valid :authority value, got {h.host!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in h.grpc_service) or len(h.grpc_service) > 255:
        c.add(
            f"{hp}.grpc_service",
            f"must be a service name of at most 255 printable characters, got {h.grpc_service!r}",
        )
    for j, backend in enumerate(lst.backends):
        protocol = backend.protocol or NATURAL_BACKEND_PROTOCOL[lst.protocol]
        if protocol != "h2":
            c.add(
                f"{hp}.kind",
                f'"grpc" checks speak HTTP/2: backends[{j}] has protocol {protocol!r}; '
                'allowed: "h2" (or use kind = "http" / "tcp")',
            )


def parse_status_ranges(text: str) -> list[tuple[int, int]] | None:
    """'200-399,404' -> [(200, 399), (404, 404)]; None when malformed."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        m = _STATUS_RANGE.match(part.strip())
        if not m:
            return None
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if high < low:
            return None
        ranges.append((low, high))
    return ranges


def _backends(lst: ListenerConfig, path: str, c: Collector) -> None:
    if not lst.backends:
        c.add(f"{path}.backends", "a listener needs at least one [[listeners.backends]] entry")
    allowed = ALLOWED_BACKEND_PROTOCOLS[lst.protocol]
    seen: dict[str, int] = {}
    for j, backend in enumerate(lst.backends):
        bp = f"{path}.backends[{j}]"
        addr: HostPort | None = None
        try:
            addr = parse_host_port(backend.address, allow_hostname=True)
        except AddressError as exc:
            c.add(f"{bp}.address", str(exc))
        if addr is not None:
            key = str(addr)
            if key in seen:
                c.add(
                    f"{bp}.address",
                    f"duplicate backend {key!r} (also backends[{seen[key]}]); use weight instead",
                )
            seen[key] = j
        proto = backend.protocol or NATURAL_BACKEND_PROTOCOL[lst.protocol]
        if proto not in allowed:
            c.add(
                f"{bp}.protocol",
                f"a {lst.protocol!r} listener can reach {', '.join(allowed)} backends, not {proto!r}",
            )
        elif proto not in features.BUILT_BACKEND_PROTOCOLS:
            c.add(
                f"{bp}.protocol",
                f"{proto!r} backends {features.NOT_BUILT_HINT}; available: {', '.join(sorted(features.BUILT_BACKEND_PROTOCOLS & set(allowed)))}",
            )
        if backend.weight < 1:
            c.add(f"{bp}.weight", f"must be >= 1, got {backend.weight}")
        elif backend.weight > 10_000:
            c.add(f"{bp}.weight", f"must be <= 10000, got {backend.weight}")
        if backend.tls is not None and not features.BACKEND_TLS_BUILT:
            c.add(f"{bp}.tls", f"TLS towards backends {features.NOT_BUILT_HINT}")
        elif backend.tls is not None and proto not in ("tcp", "h1", "h2", "h3"):
            c.add(
                f"{bp}.tls",
                f"TLS towards backends applies to tcp, h1, h2 and h3 backends, not {proto!r}",
            )
        elif backend.tls is None and proto == "h3":
            c.add(
                f"{bp}.tls",
                "an h3 backend needs a [listeners.backends.tls] table: QUIC is always TLS "
                "(verify is on by default; set ca_path and server_name as needed)",
            )
        if backend.proxy_protocol not in features.BUILT_PROXY_PROTOCOLS:
            c.add(
                f"{bp}.proxy_protocol",
                f"PROXY protocol {backend.proxy_protocol!r} {features.NOT_BUILT_HINT}",
            )
        elif backend.proxy_protocol != "none" and proto != "tcp":
            # A PROXY header describes one client, once per upstream connection; pooled HTTP
            # connections carry many clients' requests (X-Forwarded-For does that job there).
            c.add(
                f"{bp}.proxy_protocol",
                f"PROXY protocol is sent only to tcp backends (of tcp and tls listeners), not "
                f"{proto!r}: pooled HTTP connections serve many clients; use X-Forwarded-For",
            )
