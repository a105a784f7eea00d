"""Checks a plan needs from the file system before anything starts.

Validation (gateway/config/validate.py) is pure; what needs to look at files
(certificates, keys) runs here, for both `--check` and start-up, so a bad path
fails the check instead of a later worker.
"""

from __future__ import annotations

from gateway.config.plan import GatewayPlan
from gateway.errors import ConfigError, Problem


def preflight(plan: GatewayPlan, *, source: str = "") -> None:
    problems: list[Problem] = []
    for i, lst in enumerate(plan.config.listeners):
        if lst.tls is None:
            continue
        for key in ("cert_path", "key_path"):
            path = getattr(lst.tls, key)
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                problems.append(
                    Problem(f"listeners[{i}].tls.{key}", f"cannot read {path!r}: {exc.strerror}")
                )
    if problems:
        raise ConfigError(problems, source)
