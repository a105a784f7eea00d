"""Every test_h1_proxy_* test runs against both HTTP/1.1 paths: the dedicated fast path and
the general proxy core (workers/http), which must behave the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from h1_peers import PROXY_PATH


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.startswith(("test_h1_proxy", "test_h1_hardening")):
        metafunc.parametrize("h1_path", ["fast", "general"], indirect=True)


@pytest.fixture(autouse=True)
def h1_path(request: pytest.FixtureRequest) -> Iterator[str]:
    mode = getattr(request, "param", "fast")
    PROXY_PATH["mode"] = mode
    yield mode
    PROXY_PATH["mode"] = "fast"
