from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import DemoBackends, RunningGateway, free_port


@pytest.fixture
def echo_backends() -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    backends = DemoBackends(tcp_echo=ports)
    yield ports
    backends.stop()


def tcp_config(
    listen_port: int, backend_ports: list[int], extra: str = "", runtime: str = ""
) -> str:
    backends = "".join(
        f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in backend_ports
    )
    return f"""
[runtime]
drain_timeout_ms = 3000
{runtime}

[[listeners]]
name = "echo"
address = "127.0.0.1:{listen_port}"
protocol = "tcp"
{extra}
{backends}
"""


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[type]:
    started: list[RunningGateway] = []

    class Factory:
        @staticmethod
        def start(config: str, **kw: object) -> RunningGateway:
            gw = RunningGateway(tmp_path, config, **kw)  # type: ignore[arg-type]
            started.append(gw)
            return gw.start()

    yield Factory
    for gw in started:
        gw.stop()
