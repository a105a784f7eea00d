"""Every test_h1_proxy_* test runs against both HTTP/1.1 paths: the dedicated fast path and
the general proxy core (workers/http), which must behave the same; the fast path both with a
task per connection and with connections started without one (workers/http1/taskless.py, as
the worker starts them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from h1_peers import PROXY_PATH, TasklessHost


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.startswith(("test_h1_proxy", "test_h1_hardening")):
        metafunc.parametrize("h1_path", ["fast", "taskless", "general"], indirect=True)
    elif metafunc.module.__name__.startswith(("test_h1_dispatcher", "test_h1_connection_end")):
        # The dispatcher's own tests: both ways a connection is started onto it.
        metafunc.parametrize("h1_path", ["fast", "taskless"], indirect=True)
    elif metafunc.module.__name__.startswith("test_h1_taskless"):
        metafunc.parametrize("h1_path", ["taskless"], indirect=True)


@pytest.fixture(autouse=True)
def h1_path(request: pytest.FixtureRequest) -> Iterator[str]:
    mode = getattr(request, "param", "fast")
    PROXY_PATH["mode"] = mode
    TasklessHost.made.clear()
    yield mode
    PROXY_PATH["mode"] = "fast"
    for host in TasklessHost.made:  # every connection started without a task was ended once
        assert (host.started, host.live_scopes) == (host.ended, set())
    if mode == "taskless" and TasklessHost.made:
        assert any(host.started for host in TasklessHost.made), "no connection ran taskless"
