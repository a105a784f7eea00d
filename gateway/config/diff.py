"""Step 4 of 4: old plan vs new plan -> what a reload must do.

A reload always starts a new worker generation (workers are cheap and get the new
plan whole), so the diff is about what outlives generations: listening sockets
(kept when their key is unchanged, so no TCP listener is ever closed and reopened),
CPUs, and settings that only a restart can change, which are reported, not ignored.
"""

from __future__ import annotations

import msgspec

from gateway.config.plan import GatewayPlan, SocketKey


class PlanDiff(msgspec.Struct, frozen=True):
    listeners_added: list[str]
    listeners_removed: list[str]
    listeners_changed: list[str]
    sockets_to_open: list[SocketKey]
    sockets_to_close: list[SocketKey]
    cpus_added: list[int]
    cpus_removed: list[int]
    restart_required: list[str]  # key paths whose new value a reload cannot apply

    @property
    def unchanged(self) -> bool:
        return not (
            self.listeners_added
            or self.listeners_removed
            or self.listeners_changed
            or self.cpus_added
            or self.cpus_removed
            or self.restart_required
        )


# Settings the running supervisor holds open or bound: a reload cannot swap them.
_RESTART_ONLY = (
    ("runtime", "control_socket"),
    ("observability", "metrics_bind"),
    ("observability", "log_format"),
    ("observability", "max_series_per_family"),
    ("admin", "api_token_hash"),
    ("admin", "allow_non_loopback"),
    ("kernel", "enabled"),
    ("kernel", "interfaces"),
    ("kernel", "mode"),
    ("kernel", "instance"),
)


def diff_plans(old: GatewayPlan, new: GatewayPlan) -> PlanDiff:
    old_l = {lst.name: lst for lst in old.listeners}
    new_l = {lst.name: lst for lst in new.listeners}
    old_s = set(old.sockets())
    new_s = set(new.sockets())
    restart = []
    for section, key in _RESTART_ONLY:
        if getattr(getattr(old.config, section), key) != getattr(getattr(new.config, section), key):
            restart.append(f"{section}.{key}")
    return PlanDiff(
        listeners_added=sorted(set(new_l) - set(old_l)),
        listeners_removed=sorted(set(old_l) - set(new_l)),
        listeners_changed=sorted(n for n in set(old_l) & set(new_l) if old_l[n] != new_l[n]),
        sockets_to_open=sorted(new_s - old_s, key=_socket_order),
        sockets_to_close=sorted(old_s - new_s, key=_socket_order),
        cpus_added=sorted(set(new.cpus) - set(old.cpus)),
        cpus_removed=sorted(set(old.cpus) - set(new.cpus)),
        restart_required=restart,
    )


def _socket_order(key: SocketKey) -> tuple[str, str, int, int]:
    return (key.transport, key.host, key.port, key.family)
