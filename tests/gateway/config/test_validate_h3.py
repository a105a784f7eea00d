"""Validation and plan of `quic` listeners (HTTP/3 front): SNI certificates, `[listeners.h3]`,
and `alt_svc` on h1s listeners naming a quic listener."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.plan import GatewayPlan, compile_config
from gateway.config.schema import H3Config
from gateway.config.validate import collect_problems


def check(text: str) -> list[str]:
    config = load_config(text.encode())
    return [
        p.render() for p in collect_problems(config, online_cpus=[0, 1], lines=locate_lines(text))
    ]


def config(
    quic_extra: str = "",
    h1s_extra: str = "",
    backend: str = 'protocol = "h1"',
    quic_top: str = "",
    quic_tls: str = "",
) -> str:
    return f"""
[[listeners]]
name = "web"
address = "127.0.0.1:8443"
protocol = "h1s"
{h1s_extra}
[listeners.tls]
cert_path = "default.pem"
key_path = "default.key"
[[listeners.backends]]
address = "127.0.0.1:9001"

[[listeners]]
name = "web-h3"
address = "127.0.0.1:8443"
protocol = "quic"
{quic_top}
[listeners.tls]
cert_path = "default.pem"
key_path = "default.key"
server_names = ["example.com"]
{quic_tls}
[[listeners.tls.certificates]]
server_names = ["api.example.com"]
cert_path = "api.pem"
key_path = "api.key"
{quic_extra}
[[listeners.backends]]
address = "127.0.0.1:9001"
{backend}
"""


def test_quic_with_sni_certificates_and_alt_svc_is_valid_and_planned() -> None:
    text = config(h1s_extra='alt_svc = "web-h3"')
    assert check(text) == []
    plan = compile_config(text.encode(), online_cpus=[0, 1])
    web, quic = plan.listeners
    assert web.alt_svc == b'h3=":8443"; ma=86400'
    assert quic.alt_svc is None
    assert quic.socket.transport == "udp" and web.socket.transport == "tcp"
    assert quic.tls is not None and [c.cert_path for c in quic.tls.certificates] == [
        "default.pem",
        "api.pem",
    ]
    assert quic.h3 == H3Config() and web.h3 is None
    assert (quic.h3.retry, quic.h3.retry_new_connections_per_s) == ("above_rate", 200)
    assert quic.h3.early_data is False and quic.h3.max_requests_per_connection == 10_000
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=GatewayPlan) == plan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            config(h1s_extra='alt_svc = "nope"'),
            [
                "listeners[0].alt_svc: must name a quic listener (allowed: 'web-h3'), "
                "got 'nope' (line 6)"
            ],
        ),
        (
            config(quic_top='alt_svc = "web-h3"'),
            ["listeners[1].alt_svc: only allowed on h1s listeners, not 'quic' (line 26)"],
        ),
        (
            config(h1s_extra="[listeners.h3]\nmax_concurrent_streams = 5"),
            ["listeners[0].h3: only allowed on quic listeners, not 'h1s' (line 6)"],
        ),
        (
            config(
                quic_extra="[listeners.h3]\nmax_concurrent_streams = 0\n"
                "initial_stream_window_size = 1048576\ninitial_connection_window_size = 65536\n"
                "idle_timeout_ms = 10"
            ),
            [
                "listeners[1].h3.max_concurrent_streams: must be 1..10000, got 0",
                "listeners[1].h3.initial_connection_window_size: must be 1048576..1073741824, "
                "got 65536",
                "listeners[1].h3.idle_timeout_ms: must be 1000..3600000, got 10",
            ],
        ),
        (
            config(
                quic_extra='[listeners.h3]\nretry = "sometimes"\nretry_new_connections_per_s = 0\n'
                "max_requests_per_connection = -1"
            ),
            [
                "listeners[1].h3.retry: must be one of 'always', 'never', 'above_rate', "
                "got 'sometimes'",
                "listeners[1].h3.retry_new_connections_per_s: must be 1..1000000, got 0",
                "listeners[1].h3.max_requests_per_connection: must be 1..100000000 "
                "(or 0 to disable), got -1",
            ],
        ),
        (
            config(quic_tls='alpn = ["h3"]'),
            ["listeners[1].tls.alpn: a quic listener always offers 'h3' and takes no alpn key"],
        ),
    ],
)
def test_h3_problems(text: str, expected: list[str]) -> None:
    got = check(text)
    assert [g.split(" (line")[0] for g in got] == [e.split(" (line")[0] for e in expected], got


def test_h3_backend_of_a_quic_listener_needs_a_tls_table() -> None:
    got = check(config(backend=""))  # a quic listener's natural backend protocol is h3
    assert any(
        g.startswith("listeners[1].backends[0].tls: an h3 backend needs a [listeners.backends.tls]")
        for g in got
    ), got
    with_tls = check(config(backend='[listeners.backends.tls]\nserver_name = "backend.internal"'))
    assert not [g for g in with_tls if "backends[0]" in g], with_tls
