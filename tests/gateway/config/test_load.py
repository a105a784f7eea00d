"""Step 1: TOML bytes -> Structs, with every type problem named by key path and line."""

from __future__ import annotations

import pytest

from gateway.config.load import load_config
from gateway.config.schema import Config
from gateway.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(text.encode(), "t.toml")
    return [p.render("t.toml") for p in info.value.problems]


def test_base_loads_with_defaults(base_toml: str) -> None:
    config = load_config(base_toml.encode())
    assert isinstance(config, Config)
    assert config.runtime.drain_timeout_ms == 10_000
    assert config.runtime.connect_timeout_ms == 5_000
    assert config.runtime.per_ip_connection_cap == 1_024
    assert config.listeners[1].backends[0].weight == 3
    assert config.listeners[0].backends[0].weight == 1
    assert config.listeners[0].backends[0].protocol is None  # the plan applies the natural one


def test_empty_document_is_typed_but_has_no_listeners() -> None:
    assert load_config(b"").listeners == []


def test_unknown_key_named_with_path_allowed_keys_and_line(base_toml: str) -> None:
    text = base_toml + "bogus = 1\n"
    [line] = problems(text)
    assert line.startswith("listeners[1].backends[0].bogus: unknown key; allowed here: address, ")
    assert "weight" in line
    assert line.endswith(f"(t.toml:{text.count(chr(10))})")


def test_every_type_problem_is_reported_at_once() -> None:
    text = """
[runtime]
drain_timeout_ms = "ten"
workers = true
[observability]
log_format = "xml"
[[listeners]]
name = 5
address = "127.0.0.1:1"
protocol = "ftp"
"""
    found = problems(text)
    paths = [f.split(":", 1)[0] for f in found]
    assert paths == [
        "runtime.drain_timeout_ms",
        "runtime.workers",
        "observability.log_format",
        "listeners[0].name",
        "listeners[0].protocol",
    ]
    assert "must be an integer, got 'ten' (t.toml:3)" in found[0]
    assert "one of 'auto', 'json', 'console'" in found[2]
    assert "'tcp', 'udp', 'tls', 'h1', 'h1s', 'quic'" in found[4]


def test_missing_required_key() -> None:
    found = problems('[[listeners]]\nname = "a"\nprotocol = "tcp"\n')
    assert found == ["listeners[0].address: is required (t.toml:1)"]


def test_syntax_error_has_line() -> None:
    [line] = problems("[runtime]\ndrain_timeout_ms = = 3\n")
    assert line.startswith("<toml>: syntax error:")
    assert line.endswith("(t.toml:2)")


def test_non_utf8_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(b"\xff\xfe[runtime]")


def test_table_where_value_expected() -> None:
    found = problems("runtime = 3\n")
    assert found == ["runtime: must be a table, got 3 (t.toml:1)"]
