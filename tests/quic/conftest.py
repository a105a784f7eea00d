from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import RunningGateway

from tools.make_certs import CertFiles, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("quic-certs"))


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
