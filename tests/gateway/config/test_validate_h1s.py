"""`h1s` listeners in validation and the plan: ALPN, SNI certificates and their server names
(valid DNS names or one-label wildcards, each claimed once), refused on other listeners."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.plan import CertificatePlan, GatewayPlan, ListenerTlsPlan, compile_config
from gateway.config.validate import collect_problems
from gateway.config.validate_http import server_name_problem


def check(text: str) -> list[str]:
    config = load_config(text.encode())
    return [
        p.render() for p in collect_problems(config, online_cpus=[0, 1], lines=locate_lines(text))
    ]


def h1s(tls: str = "", certificates: str = "", proto: str = "h1s") -> str:
    return f"""
[runtime]
handshake_timeout_ms = 700

[[listeners]]
name = "web"
address = "127.0.0.1:8443"
protocol = "{proto}"

[listeners.tls]
cert_path = "default.pem"
key_path = "default.key"
{tls}
{certificates}
[[listeners.backends]]
address = "127.0.0.1:9001"
"""


def cert(names: str, stem: str = "c") -> str:
    return (
        "[[listeners.tls.certificates]]\n"
        f'server_names = {names}\ncert_path = "{stem}.pem"\nkey_path = "{stem}.key"\n'
    )


SNI = h1s(
    'server_names = ["example.com", "WWW.example.com."]\nalpn = ["http/1.1"]\ntls13_only = true',
    cert('["api.example.com"]', "api") + cert('["*.example.com", "*.shop.test"]', "wild"),
)


def test_h1s_with_certificates_is_valid() -> None:
    assert check(SNI) == []
    assert check(h1s()) == []  # one certificate, default ALPN


def test_plan_compiles_the_certificates_default_first() -> None:
    plan = compile_config(SNI.encode(), online_cpus=[0, 1])
    tls = plan.listeners[0].tls
    assert tls == ListenerTlsPlan(
        certificates=[
            CertificatePlan("default.pem", "default.key", ["example.com", "www.example.com"]),
            CertificatePlan("api.pem", "api.key", ["api.example.com"]),
            CertificatePlan("wild.pem", "wild.key", ["*.example.com", "*.shop.test"]),
        ],
        tls13_only=True,
        alpn=["http/1.1"],
        handshake_timeout_ms=700,
    )
    # ... and it reaches the workers intact.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=GatewayPlan) == plan


def test_plan_defaults_alpn_to_h2_first() -> None:
    tls = compile_config(h1s().encode(), online_cpus=[0]).listeners[0].tls
    assert tls is not None and tls.alpn == ["h2", "http/1.1"]


def test_tls_listeners_get_no_tls_plan() -> None:
    plan = compile_config(h1s(proto="tls").encode(), online_cpus=[0])
    assert plan.listeners[0].tls is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            h1s(
                certificates=cert('["a.example.com", "b.example.com"]') + cert('["A.example.com"]')
            ),
            [
                "listeners[0].tls.certificates[1].server_names[0]: server name 'A.example.com' "
                "is claimed twice (also listeners[0].tls.certificates[0].server_names[0]) (line 19)"
            ],
        ),
        (
            h1s('server_names = ["*.example.com"]', cert('["*.example.com."]')),
            [
                "listeners[0].tls.certificates[0].server_names[0]: server name '*.example.com.' "
                "is claimed twice (also listeners[0].tls.server_names[0]) (line 15)"
            ],
        ),
        (
            h1s(certificates=cert("[]")),
            [
                "listeners[0].tls.certificates[0].server_names: a certificate needs at least one "
                "server name (SNI selects it by name; the top-level cert_path is the default for "
                "everything else) (line 15)"
            ],
        ),
        (
            h1s('alpn = ["h2", "h3", "h2"]'),
            [
                "listeners[0].tls.alpn: must include 'http/1.1' (a client without ALPN is served "
                "HTTP/1.1 anyway); allowed: ['h2', 'http/1.1'] or ['http/1.1'], got "
                "['h2', 'h3', 'h2'] (line 13)",
                "listeners[0].tls.alpn[1]: must be one of 'h2', 'http/1.1', got 'h3' (line 13)",
                "listeners[0].tls.alpn[2]: 'h2' is listed twice (line 13)",
            ],
        ),
        (
            h1s('alpn = ["h2", "http/1.1"]\nserver_names = ["a.test"]', cert('["b.test"]'), "tls"),
            [
                "listeners[0].tls.server_names: only allowed on h1s and quic listeners, not 'tls' "
                "(line 14)",
                "listeners[0].tls.certificates: only allowed on h1s and quic listeners, not 'tls'",
            ],
        ),
        (
            h1s('alpn = ["http/1.1"]', proto="tls"),
            ["listeners[0].tls.alpn: only allowed on h1s listeners, not 'tls' (line 13)"],
        ),
    ],
)
def test_h1s_problems(text: str, expected: list[str]) -> None:
    assert check(text) == expected


@pytest.mark.parametrize(
    "name", ["example.com", "a-b.example.com", "*.example.com", "localhost", "EXAMPLE.com."]
)
def test_valid_server_names(name: str) -> None:
    assert server_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("127.0.0.1", "SNI carries no IP addresses"),
        ("::1", "SNI carries no IP addresses"),
        ("*.com", "at least two labels"),
        ("a.*.example.com", "must be a DNS name"),
        ("*example.com", "must be a DNS name"),
        ("-a.example.com", "must be a DNS name"),
        ("a_b.example.com", "must be a DNS name"),
        ("", "must be a DNS name"),
        ("a" * 64 + ".com", "must be a DNS name"),
    ],
)
def test_invalid_server_names(name: str, says: str) -> None:
    problem = server_name_problem(name)
    assert problem is not None and says in problem, problem
