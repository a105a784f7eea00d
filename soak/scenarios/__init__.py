"""The scenario registry: every module in this package that defines `SCENARIO`.

A new protocol (HTTP/2, HTTP/3, gRPC, QUIC passthrough) adds one module here and, if it
needs a new listener or backend kind, one entry in `soak.gateway_config` and
`soak.backend_server`; nothing else changes. Registry order is the modules' name order.
"""

from __future__ import annotations

import importlib
import pkgutil

from soak.scenario import Scenario


def all_scenarios() -> dict[str, Scenario]:
    found: dict[str, Scenario] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if isinstance(scenario, Scenario):
            found[scenario.name] = scenario
    return found


def default_names() -> list[str]:
    return [name for name, s in all_scenarios().items() if s.default]
