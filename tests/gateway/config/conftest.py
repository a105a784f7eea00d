from __future__ import annotations

import pytest

BASE = """
[runtime]
control_socket = "/tmp/eg-test.sock"

[[listeners]]
name = "web"
address = "127.0.0.1:8080"
protocol = "h1"

[[listeners.backends]]
address = "127.0.0.1:9001"

[[listeners]]
name = "raw"
address = "127.0.0.1:8081"
protocol = "tcp"

[[listeners.backends]]
address = "127.0.0.1:9201"
weight = 3
"""


@pytest.fixture
def base_toml() -> str:
    return BASE
