"""Step 2: semantic validation — every rule, every problem at once, with key paths."""

from __future__ import annotations

import pytest

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.validate import collect_problems, hash_key_problem, parse_status_ranges

CPUS = [0, 1]


def check(text: str, cpus: list[int] = CPUS) -> list[str]:
    config = load_config(text.encode())
    return [
        p.render() for p in collect_problems(config, online_cpus=cpus, lines=locate_lines(text))
    ]


def test_base_is_valid(base_toml: str) -> None:
    assert check(base_toml) == []


def listener(
    proto: str = "tcp",
    extra: str = "",
    backends: str = '[[listeners.backends]]\naddress = "127.0.0.1:9201"\n',
    name: str = "a",
    address: str = "127.0.0.1:7000",
) -> str:
    return f'[[listeners]]\nname = "{name}"\naddress = "{address}"\nprotocol = "{proto}"\n{extra}\n{backends}'


@pytest.mark.parametrize(
    "text",
    [
        listener() + 'proxy_protocol = "v1"\n',
        listener() + 'proxy_protocol = "v2"\n',
        listener(proto="tls", extra='[listeners.tls]\ncert_path = "c"\nkey_path = "k"')
        + 'proxy_protocol = "v2"\n',
        listener(
            proto="tls", extra='[listeners.tls]\ncert_path = "c"\nkey_path = "k"\ntls13_only = true'
        ),
        listener() + '[listeners.backends.tls]\nca_path = "ca.pem"\nserver_name = "localhost"\n',
        listener(proto="h1") + "[listeners.backends.tls]\nverify = false\n",
    ],
)
def test_tls_and_proxy_protocol_settings_are_accepted(text: str) -> None:
    assert check(text) == []


def test_weight_zero_message_matches_the_documented_form() -> None:
    text = listener() + "weight = 0\n"
    assert check(text) == ["listeners[0].backends[0].weight: must be >= 1, got 0 (line 8)"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "[runtime]\nworkers = 3\n",
            "runtime.workers: must be 1..2 (CPUs available to this process), got 3",
        ),
        ("[runtime]\nworkers = 0\n", "runtime.workers: must be 1..2"),
        (
            "[runtime]\nworkers = [0, 7]\n",
            "runtime.workers: CPU 7 is not available to this process; available: [0, 1]",
        ),
        ("[runtime]\nworkers = [1, 1]\n", "runtime.workers: CPU ids must be distinct"),
        ("[runtime]\nworkers = []\n", "runtime.workers: the CPU list must not be empty"),
        ('[runtime]\nworkers = "many"\n', 'runtime.workers: must be "auto"'),
        (
            "[runtime]\ndrain_timeout_ms = 0\n",
            "runtime.drain_timeout_ms: must be 100..300000, got 0",
        ),
        (
            "[runtime]\nmax_draining_generations = -1\n",
            "runtime.max_draining_generations: must be 0..1000, got -1",
        ),
        (
            "[runtime]\nconnect_timeout_ms = -5\n",
            "runtime.connect_timeout_ms: must be 100..60000, got -5",
        ),
        (
            "[runtime]\nper_ip_connection_cap = 0\n",
            "runtime.per_ip_connection_cap: must be 1..2000000, got 0",
        ),
        (
            "[runtime]\nmax_inflight_connections = 5\n",
            "runtime.max_inflight_connections: must be 100..2000000, got 5",
        ),
        (
            '[runtime]\ncontrol_socket = "rel.sock"\n',
            "runtime.control_socket: must be an absolute path",
        ),
        (
            '[observability]\nmetrics_bind = "10.0.0.1:9090"\n',
            "observability.metrics_bind: '10.0.0.1:9090' is not a loopback address",
        ),
        (
            '[observability]\nmetrics_bind = "nonsense"\n',
            "observability.metrics_bind: expected host:port",
        ),
        (
            "[observability]\naccess_log_flush_ms = 0\n",
            "observability.access_log_flush_ms: must be 1..60000, got 0",
        ),
        (
            '[admin]\napi_token_hash = "abc"\n',
            "admin.api_token_hash: must be the SHA-256 hex digest",
        ),
        (
            "[admin]\nallow_non_loopback = true\n",
            "admin.allow_non_loopback: true requires admin.api_token_hash",
        ),
        ("[kernel]\nenabled = true\n", "kernel.interfaces: must name at least one interface"),
        (
            '[kernel]\ninterfaces = ["a/b"]\n',
            "kernel.interfaces[0]: 'a/b' is not a valid interface name",
        ),
        ('[kernel]\ndeny = ["10.0.0.0/33"]\n', "kernel.deny[0]: must be a CIDR"),
        (
            "[kernel]\nnew_flow_cap_per_sec = -1\n",
            "kernel.new_flow_cap_per_sec: must be 1..10000000 (or 0 to disable)",
        ),
    ],
)
def test_global_rules(snippet: str, expected: str) -> None:
    found = check(snippet + listener())
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (listener(address="127.0.0.1:0"), "listeners[0].address: port must be 1..65535, got 0"),
        (
            listener(address="127.0.0.1:70000"),
            "listeners[0].address: port must be 1..65535, got 70000",
        ),
        (listener(address="::1:80"), "listeners[0].address: IPv6 addresses must be bracketed"),
        (
            listener(address="example.com:80"),
            "listeners[0].address: listener addresses must be IP literals",
        ),
        (
            listener(address="[zz::1]:80"),
            "listeners[0].address: 'zz::1' inside brackets is not an IPv6 address",
        ),
        (listener(name="bad name"), "listeners[0].name: must be 1..63 characters"),
        (listener(backends=""), "listeners[0].backends: a listener needs at least one"),
        (
            listener(proto="quic"),
            "listeners[0].tls: a 'quic' listener needs a [listeners.tls] table",
        ),
        (listener(proto="tls"), "listeners[0].tls: a 'tls' listener needs a [listeners.tls] table"),
        (
            listener(extra="drain_timeout_ms = 50"),
            "listeners[0].drain_timeout_ms: must be 100..300000, got 50",
        ),
        (
            listener(extra="[listeners.http]\nheader_timeout_ms = 1"),
            "listeners[0].http: only allowed on HTTP listeners",
        ),
        (
            listener(proto="h1", extra="[listeners.http]\nheader_timeout_ms = 0"),
            "listeners[0].http.header_timeout_ms: must be 1..3600000, got 0",
        ),
        (
            listener(proto="h1", extra="[listeners.http]\nmax_header_bytes = 10"),
            "listeners[0].http.max_header_bytes: must be 1024..1048576",
        ),
        (
            listener(extra="[listeners.udp]\nmax_sessions = 3"),
            "listeners[0].udp: only allowed on udp and quic_passthrough listeners",
        ),
        (
            listener(extra="[listeners.websocket]\nenabled = true"),
            "listeners[0].websocket: only allowed on HTTP listeners",
        ),
        (
            listener(extra='[listeners.balancer]\nhash_key = "path"'),
            "listeners[0].balancer.hash_key: is used only by the hash policies",
        ),
        (
            listener(extra='[listeners.balancer]\npolicy = "maglev"\nhash_key = "path"'),
            "listeners[0].balancer.hash_key: 'path' needs an HTTP listener",
        ),
        (
            listener(extra='[listeners.balancer]\npolicy = "maglev"\nhash_key = "cookie:"'),
            "listeners[0].balancer.hash_key: cookie:NAME needs a valid name",
        ),
        (
            listener(extra='[listeners.balancer]\npolicy = "maglev"\nhash_key = "geo"'),
            "listeners[0].balancer.hash_key: must be one of client_ip",
        ),
        (
            listener(extra="[listeners.balancer]\nmax_connect_attempts = 0"),
            "listeners[0].balancer.max_connect_attempts: must be 1..10, got 0",
        ),
        (
            listener(extra="[listeners.balancer]\npanic_threshold = 101"),
            "listeners[0].balancer.panic_threshold: must be 0..100, got 101",
        ),
        (
            listener(extra="[listeners.health]\ninterval_ms = 1000\ntimeout_ms = 2000"),
            "listeners[0].health.timeout_ms: must be <= interval_ms (1000), got 2000",
        ),
        (
            listener(extra="[listeners.health]\nrise = 0"),
            "listeners[0].health.rise: must be 1..100, got 0",
        ),
        (
            listener(extra="[listeners.health]\nfall = 0"),
            "listeners[0].health.fall: must be 1..100, got 0",
        ),
        (
            listener(extra='[listeners.health]\nkind = "http"\npath = "nope"'),
            "listeners[0].health.path: must be an origin-form path",
        ),
        (
            listener(extra='[listeners.health]\nkind = "http"\nexpected_status = "2xx"'),
            "listeners[0].health.expected_status: must be a status or range list",
        ),
        (
            listener(extra='[listeners.health]\nkind = "tcp"\npath = "/x"'),
            'listeners[0].health: path, expected_status and host apply only to kind = "http"',
        ),
        (
            listener(extra="[listeners.outlier]\nbase_ejection_ms = 5000\nmax_ejection_ms = 1000"),
            "listeners[0].outlier.max_ejection_ms: must be >= base_ejection_ms (5000), got 1000",
        ),
        (
            listener(extra="[listeners.outlier]\nconsecutive_failures = 0"),
            "listeners[0].outlier.consecutive_failures: must be 1..1000, got 0",
        ),
        (
            listener() + 'protocol = "h1"\n',
            "listeners[0].backends[0].protocol: a 'tcp' listener can reach tcp backends, not 'h1'",
        ),
        (
            listener(proto="h1") + 'protocol = "h3"\n',
            "listeners[0].backends[0].tls: an h3 backend needs a [listeners.backends.tls] table: "
            "QUIC is always TLS",
        ),
        (
            listener() + "weight = 20000\n",
            "listeners[0].backends[0].weight: must be <= 10000, got 20000",
        ),
        (
            listener(proto="h1") + 'proxy_protocol = "v1"\n',
            "listeners[0].backends[0].proxy_protocol: PROXY protocol is sent only to tcp backends",
        ),
        (
            listener(proto="udp") + "[listeners.backends.tls]\nverify = true\n",
            "listeners[0].backends[0].tls: TLS towards backends applies to tcp, h1, h2 and h3 backends, not 'udp'",
        ),
        (
            listener(proto="udp") + 'proxy_protocol = "v2"\n',
            "listeners[0].backends[0].proxy_protocol: PROXY protocol is sent only to tcp backends",
        ),
        (
            listener(extra='[listeners.tls]\ncert_path = "c"\nkey_path = "k"'),
            "listeners[0].tls: only allowed on tls, h1s and quic listeners, not 'tcp'",
        ),
        (
            listener(backends='[[listeners.backends]]\naddress = "x"\n'),
            "listeners[0].backends[0].address: expected host:port",
        ),
        (
            listener(backends='[[listeners.backends]]\naddress = "-bad-.example:80"\n'),
            "listeners[0].backends[0].address: '-bad-.example' is neither an IP address nor a valid host name",
        ),
    ],
)
def test_listener_rules(text: str, expected: str) -> None:
    found = check(text)
    assert any(p.startswith(expected) for p in found), found


def test_duplicate_backends_names_and_addresses() -> None:
    b = '[[listeners.backends]]\naddress = "127.0.0.1:9201"\n'
    text = listener(backends=b + b) + listener(name="a", address="127.0.0.1:7000")
    found = check(text)
    assert any(
        p.startswith("listeners[0].backends[1].address: duplicate backend '127.0.0.1:9201'")
        for p in found
    ), found
    assert any(p.startswith("listeners[1].name: duplicate listener name 'a'") for p in found), found
    assert any(
        p.startswith("listeners[1].address: '127.0.0.1:7000' (tcp) overlaps listeners[0].address")
        for p in found
    ), found


def test_wildcard_overlaps_specific_address_of_same_family_only() -> None:
    text = (
        listener(address="0.0.0.0:7000")
        + listener(name="b", address="127.0.0.1:7000")
        + listener(name="c", address="[::1]:7000")
    )
    found = check(text)
    assert [p.split(":")[0] for p in found] == ["listeners[1].address"], found


def test_all_problems_reported_together() -> None:
    text = "[runtime]\ndrain_timeout_ms = 1\n" + listener(address="127.0.0.1:0") + "weight = 0\n"
    assert len(check(text)) == 3


def test_no_listeners() -> None:
    assert check("") == ["listeners: at least one [[listeners]] entry is required"]


def test_hash_key_grammar() -> None:
    assert hash_key_problem("client_ip", "tcp") is None
    assert hash_key_problem("header:x-user", "h1") is None
    assert hash_key_problem("cookie:sid", "h1") is None
    assert hash_key_problem("quic_cid", "tcp") is not None
    assert hash_key_problem("client_ip:x", "tcp") is not None
    assert hash_key_problem("header:bad name", "h1") is not None


def test_status_ranges() -> None:
    assert parse_status_ranges("200-399,404") == [(200, 399), (404, 404)]
    assert parse_status_ranges("399-200") is None
    assert parse_status_ranges("600") is None
    assert parse_status_ranges("") is None


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ('forwarded_headers = "replace"', []),
        ('forwarded_headers = "trusted"\ntrusted_proxies = ["10.0.0.0/8", "::1/128"]', []),
        (
            'forwarded_headers = "trusted"',
            [
                'listeners[0].http.trusted_proxies: forwarded_headers = "trusted" needs at least '
                'one proxy CIDR here (with none, use "replace")'
            ],
        ),
        (
            'trusted_proxies = ["10.0.0.0/8"]',
            [
                "listeners[0].http.trusted_proxies: is used only with forwarded_headers = "
                "\"trusted\", not 'append' (line 6)"
            ],
        ),
        (
            'forwarded_headers = "trusted"\ntrusted_proxies = ["10.0.0.0/33"]',
            [
                "listeners[0].http.trusted_proxies[0]: must be a CIDR such as 10.0.0.0/8 or "
                "2001:db8::/32, got '10.0.0.0/33' (line 7)"
            ],
        ),
        (
            "retry_budget_percent = 101",
            ["listeners[0].http.retry_budget_percent: must be 0..100, got 101 (line 6)"],
        ),
    ],
)
def test_forwarding_policy_and_retry_budget_keys(http: str, expected: list[str]) -> None:
    assert check(listener(proto="h1", extra=f"[listeners.http]\n{http}")) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[runtime]\nmax_inflight_connections = "many"\n' + listener(),
            'runtime.max_inflight_connections: must be "auto" (sized from the open-files limit)'
            " or 100..2000000, got 'many'",
        ),
        (
            "[runtime]\nper_ip_ipv6_prefix = 16\n" + listener(),
            "runtime.per_ip_ipv6_prefix: must be 32..128, got 16",
        ),
        (
            "[kernel]\nnew_flow_ipv6_prefix = 129\n" + listener(),
            "kernel.new_flow_ipv6_prefix: must be 32..128, got 129",
        ),
        (
            listener(proto="h1", extra="[listeners.relay]\nidle_timeout_ms = 1000"),
            "listeners[0].relay: only allowed on tcp and tls listeners, not 'h1'",
        ),
        (
            listener(extra="[listeners.relay]\nidle_timeout_ms = 5"),
            "listeners[0].relay.idle_timeout_ms: must be 100..86400000 (or 0 to disable), got 5",
        ),
        (
            listener(extra="[listeners.relay]\nkeepalive_probes = 500"),
            "listeners[0].relay.keepalive_probes: must be 1..127, got 500",
        ),
    ],
)
def test_descriptor_and_relay_liveness_keys(text: str, expected: str) -> None:
    found = check(text)
    assert any(p.startswith(expected) for p in found), found


def test_relay_and_auto_cap_are_accepted() -> None:
    relay = "[listeners.relay]\nidle_timeout_ms = 0\ntcp_keepalive = false"
    assert check('[runtime]\nmax_inflight_connections = "auto"\n' + listener(extra=relay)) == []
