"""The `[listeners.h3] enable_connect_protocol` key: typed, defaulted on, reaching the front."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.config.schema import H3Config
from gateway.errors import ConfigError
from workers.h3_listener import h3_limits

ROOT = Path(__file__).resolve().parents[3]


def _listener(h3_table: str) -> bytes:
    return (
        '[[listeners]]\nname = "a"\naddress = "127.0.0.1:7443"\nprotocol = "quic"\n'
        '[listeners.tls]\ncert_path = "c.pem"\nkey_path = "c.key"\n'
        f'{h3_table}\n[[listeners.backends]]\naddress = "127.0.0.1:9201"\n'
    ).encode()


def test_non_bool_value_is_named_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_listener('[listeners.h3]\nenable_connect_protocol = "yes"'), "t.toml")
    assert "listeners[0].h3.enable_connect_protocol" in str(info.value)
    assert "true or false" in str(info.value)


def test_default_on_and_false_reaches_the_front_limits() -> None:
    assert h3_limits(None).enable_connect_protocol is True
    config = load_config(_listener("[listeners.h3]\nenable_connect_protocol = false"))
    assert h3_limits(config.listeners[0].h3).enable_connect_protocol is False
    assert H3Config().enable_connect_protocol is True
    default = (ROOT / "conf" / "default.toml").read_text()
    assert "# enable_connect_protocol = true         # WebSocket over HTTP/3" in default
