"""Validation and planning of `protocol = "udp"` listeners (datagram proxy)."""

from __future__ import annotations

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.plan import compile_config
from gateway.config.schema import UdpConfig
from gateway.config.validate import collect_problems

CPUS = [0, 1]


def check(text: str) -> list[str]:
    config = load_config(text.encode())
    return [
        p.render() for p in collect_problems(config, online_cpus=CPUS, lines=locate_lines(text))
    ]


def udp_listener(extra: str = "", backend_extra: str = "") -> str:
    return (
        '[[listeners]]\nname = "dns"\naddress = "127.0.0.1:5353"\nprotocol = "udp"\n'
        f"{extra}\n"
        f'[[listeners.backends]]\naddress = "127.0.0.1:5354"\n{backend_extra}\n'
    )


def test_udp_listener_with_udp_backends_is_valid_and_planned() -> None:
    text = udp_listener(
        "[listeners.udp]\nsession_idle_timeout_ms = 500\nmax_sessions = 32\n"
        '[listeners.balancer]\npolicy = "maglev"\nhash_key = "quic_cid"\n'
    )
    assert check(text) == []
    plan = compile_config(text.encode(), online_cpus=CPUS)
    (lst,) = plan.listeners
    assert lst.socket.transport == "udp"
    assert lst.udp == UdpConfig(
        session_idle_timeout_ms=500,
        max_sessions=32,
        new_sessions_per_source_per_s=200,  # the plan applies the udp guards' defaults
        reply_amplification_factor=10,
    )
    assert lst.backends[0].protocol == "udp"
    assert lst.hash_key == "quic_cid"


def test_udp_defaults_apply_without_a_udp_table() -> None:
    plan = compile_config(udp_listener().encode(), online_cpus=CPUS)
    assert plan.listeners[0].udp == UdpConfig(
        session_idle_timeout_ms=30_000,
        max_sessions=65_536,
        new_sessions_per_source_per_s=200,
        reply_amplification_factor=10,
    )


def test_active_health_is_rejected_on_udp_listeners_with_a_clear_message() -> None:
    found = check(udp_listener('[listeners.health]\nkind = "tcp"\n'))
    assert len(found) == 1, found
    assert found[0].startswith(
        "listeners[0].health: active health checks are not available for udp listeners"
    )
    assert "passive health" in found[0]
    # Passive health (outlier detection) stays allowed.
    assert check(udp_listener("[listeners.outlier]\nconsecutive_failures = 2\n")) == []


def test_udp_limits_are_range_checked() -> None:
    found = check(udp_listener("[listeners.udp]\nsession_idle_timeout_ms = 5\nmax_sessions = 0\n"))
    assert any(
        p.startswith("listeners[0].udp.session_idle_timeout_ms: must be 100..") for p in found
    )
    assert any(p.startswith("listeners[0].udp.max_sessions: must be 1..") for p in found)


def test_udp_and_tcp_do_not_mix() -> None:
    found = check(udp_listener(backend_extra='protocol = "tcp"'))
    assert any("a 'udp' listener can reach udp backends, not 'tcp'" in p for p in found), found
    tcp = (
        '[[listeners]]\nname = "t"\naddress = "127.0.0.1:7000"\nprotocol = "tcp"\n'
        '[[listeners.backends]]\naddress = "127.0.0.1:7001"\nprotocol = "udp"\n'
    )
    assert any("a 'tcp' listener can reach tcp backends, not 'udp'" in p for p in check(tcp))


def test_udp_and_tcp_listeners_may_share_a_port() -> None:
    text = udp_listener() + (
        '[[listeners]]\nname = "t"\naddress = "127.0.0.1:5353"\nprotocol = "tcp"\n'
        '[[listeners.backends]]\naddress = "127.0.0.1:7001"\n'
    )
    assert check(text) == []
