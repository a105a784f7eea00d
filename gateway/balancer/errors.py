"""The balancer's exception. Interpreted on purpose (tools/build_native leaves it out): mypyc
leaves classes that inherit from a builtin other than ``object`` (here ``RuntimeError``) to
the interpreter, and keeping this one apart lets ``balancer.py`` be compiled (its ``pick``,
``request_started`` and ``request_finished`` run on every request).

Owns: ``AccountingError``. Must never grow logic.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class AccountingError(GatewayError, RuntimeError):
    """A counter would go negative: an end without a matching start."""
