from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_with_backend import BackendThread, GatewayWithBackend
from h1_gateway_config import h1_gateway_config
from running_gateway import RunningGateway, free_port


@pytest.fixture(scope="module")
def h1_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayWithBackend]:
    """The real gateway (one worker, one h1 listener) in front of a RecordingBackend.

    Module-scoped: booting the supervisor and a worker costs seconds; tests clear
    ``backend.connections`` before they look at what it received.
    """
    thread = BackendThread()
    backend = thread.start()
    port = free_port()
    gateway = RunningGateway(
        tmp_path_factory.mktemp("h1gw"), h1_gateway_config([(port, backend.port)])
    )
    try:
        gateway.start()
        yield GatewayWithBackend(gateway, port, backend)
    finally:
        gateway.stop()
        thread.stop()
