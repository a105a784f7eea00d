"""Suite-wide rules: root-only tests run as root (CI is root) and say so when skipped."""

from __future__ import annotations

import os

import pytest

_skipped_root: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """A mypyc extension older than its source would run instead of the edited code."""
    from tools.build_native import stale_extensions

    stale = stale_extensions()
    if stale:
        pytest.exit(
            f"stale compiled modules (edited after `make`): {', '.join(stale)}; "
            "run `make native` or `python -m tools.build_native --clean`",
            returncode=4,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    reason = "needs root (network namespaces, BPF); CI runs as root"
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
            _skipped_root.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped_root:
        terminalreporter.write_line(
            f"NOT ROOT: {len(_skipped_root)} root-only tests were SKIPPED; this run does not "
            "cover the kernel datapath or network namespaces",
            red=True,
            bold=True,
        )
