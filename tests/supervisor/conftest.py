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
