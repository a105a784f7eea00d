"""Validation and planning of `protocol = "quic_passthrough"` listeners and of the udp
guards: every problem names its key path, the bad value and what is allowed."""

from __future__ import annotations

import pytest

from gateway.config.load import load_config
from gateway.config.locate import locate_lines
from gateway.config.plan import compile_config
from gateway.config.validate import collect_problems

CPUS = [0, 1]


def check(text: str) -> list[str]:
    config = load_config(text.encode())
    return [
        p.render() for p in collect_problems(config, online_cpus=CPUS, lines=locate_lines(text))
    ]


def listener(blocks: str = "", backends: tuple[str, ...] = ("", ""), policy: str = "maglev") -> str:
    text = (
        '[[listeners]]\nname = "h3"\naddress = "127.0.0.1:4433"\nprotocol = "quic_passthrough"\n'
        f'[listeners.balancer]\npolicy = "{policy}"\n{blocks}\n'
    )
    for i, extra in enumerate(backends):
        text += f'[[listeners.backends]]\naddress = "127.0.0.1:{5000 + i}"\n{extra}\n'
    return text


def test_minimal_listener_is_valid_and_planned_with_its_defaults() -> None:
    text = listener()
    assert check(text) == []
    lst = compile_config(text.encode(), online_cpus=CPUS).listeners[0]
    assert lst.hash_key == "quic_cid"
    assert lst.quic_passthrough is not None and lst.quic_passthrough.server_cid_len == 8
    assert lst.udp is not None and lst.udp.reply_amplification_factor == 0
    assert [b.protocol for b in lst.backends] == ["udp", "udp"]


def test_quic_lb_listener_is_planned_with_server_ids() -> None:
    text = listener(
        "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 2\n",
        ('quic_server_id = "0001"', 'quic_server_id = "00ff"'),
    )
    assert check(text) == []
    lst = compile_config(text.encode(), online_cpus=CPUS).listeners[0]
    assert [b.quic_server_id for b in lst.backends] == ["0001", "00ff"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (listener(policy="round_robin"), "listeners[0].balancer.policy: quic_passthrough picks"),
        (
            listener("[listeners.quic_passthrough]\nmin_client_dcid_len = 4\n"),
            "listeners[0].quic_passthrough.min_client_dcid_len: must be 8..20, got 4",
        ),
        (
            listener("[listeners.quic_passthrough]\nserver_cid_len = 21\n"),
            "listeners[0].quic_passthrough.server_cid_len: must be 1..20, got 21",
        ),
        (
            listener("[listeners.quic_passthrough]\nmax_routes = 0\n"),
            "listeners[0].quic_passthrough.max_routes: must be 1..10000000, got 0",
        ),
        (
            listener("[listeners.udp]\nreply_amplification_factor = 3\n"),
            "listeners[0].udp.reply_amplification_factor: not used by quic_passthrough",
        ),
        (
            listener(
                "[listeners.quic_passthrough]\nserver_cid_len = 4\n"
                "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 4\n",
                ('quic_server_id = "00000001"', 'quic_server_id = "00000002"'),
            ),
            "listeners[0].quic_passthrough.quic_lb.server_id_len: server_id_offset + "
            "server_id_len must fit in server_cid_len (4), got 1 + 4",
        ),
        (
            listener(
                "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 2\n",
                ('quic_server_id = "0001"', ""),
            ),
            "listeners[0].backends[1].quic_server_id: required on every backend with quic_lb",
        ),
        (
            listener(
                "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 2\n",
                ('quic_server_id = "0001"', 'quic_server_id = "01"'),
            ),
            "listeners[0].backends[1].quic_server_id: must be 2 bytes in hex",
        ),
        (
            listener(
                "[listeners.quic_passthrough.quic_lb]\nserver_id_len = 2\n",
                ('quic_server_id = "0001"', 'quic_server_id = "0001"'),
            ),
            "listeners[0].backends[1].quic_server_id: duplicate server ID '0001'",
        ),
        (
            listener(backends=('quic_server_id = "0001"',)),
            "listeners[0].backends[0].quic_server_id: needs [listeners.quic_passthrough.quic_lb]",
        ),
        (
            '[[listeners]]\nname = "t"\naddress = "127.0.0.1:80"\nprotocol = "tcp"\n'
            "[listeners.quic_passthrough]\n"
            '[[listeners.backends]]\naddress = "127.0.0.1:81"\n',
            "listeners[0].quic_passthrough: only allowed on quic_passthrough listeners, not 'tcp'",
        ),
        (
            '[[listeners]]\nname = "u"\naddress = "127.0.0.1:53"\nprotocol = "udp"\n'
            "[listeners.udp]\nnew_sessions_per_source_per_s = -1\nreply_amplification_factor = 5000\n"
            '[[listeners.backends]]\naddress = "127.0.0.1:54"\n',
            "listeners[0].udp.new_sessions_per_source_per_s: must be 1..1000000 (or 0 to disable), got -1",
        ),
    ],
)
def test_problems_name_the_key_the_value_and_what_is_allowed(text: str, expected: str) -> None:
    found = check(text)
    assert any(p.startswith(expected) for p in found), found


def test_udp_guard_defaults_and_off() -> None:
    text = (
        '[[listeners]]\nname = "u"\naddress = "127.0.0.1:53"\nprotocol = "udp"\n'
        "[listeners.udp]\nreply_amplification_factor = 0\n"
        '[[listeners.backends]]\naddress = "127.0.0.1:54"\n'
    )
    udp = compile_config(text.encode(), online_cpus=CPUS).listeners[0].udp
    assert udp is not None
    assert (udp.new_sessions_per_source_per_s, udp.reply_amplification_factor) == (200, 0)
