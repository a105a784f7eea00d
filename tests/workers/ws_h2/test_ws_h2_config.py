"""The `[listeners.h2] enable_connect_protocol` key: typed, defaulted on, reaching the front."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.config.schema import H2Config
from gateway.errors import ConfigError
from workers.http_listener import h2_limits

ROOT = Path(__file__).resolve().parents[3]


def _listener(h2_table: str) -> bytes:
    return (
        '[[listeners]]\nname = "a"\naddress = "127.0.0.1:7000"\nprotocol = "h1"\n'
        f'{h2_table}\n[[listeners.backends]]\naddress = "127.0.0.1:9201"\n'
    ).encode()


def test_non_bool_value_is_named_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_listener('[listeners.h2]\nenable_connect_protocol = "yes"'), "t.toml")
    assert "listeners[0].h2.enable_connect_protocol" in str(info.value)
    assert "true or false" in str(info.value)


def test_default_on_and_false_reaches_the_front_limits() -> None:
    assert h2_limits(None).enable_connect_protocol is True
    config = load_config(_listener("[listeners.h2]\nenable_connect_protocol = false"))
    assert h2_limits(config.listeners[0].h2).enable_connect_protocol is False
    assert H2Config().enable_connect_protocol is True
    assert "enable_connect_protocol = true" in (ROOT / "conf" / "default.toml").read_text()
