"""Steps 3 and 4: plan (derived runtime data) and diff (what a reload must do)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config.diff import diff_plans
from gateway.config.plan import GatewayPlan, SocketKey, compile_config, resolve_cpus
from gateway.errors import ConfigError
from gateway.ipc import Boot, FrameDecoder, encode


def plan_of(text: str, cpus: list[int] | None = None) -> GatewayPlan:
    return compile_config(text.encode(), online_cpus=cpus or [0, 1])


def test_plan_applies_defaults_and_inheritance(base_toml: str) -> None:
    plan = plan_of(base_toml.replace('name = "raw"', 'name = "raw"\ndrain_timeout_ms = 2500'))
    web, raw = plan.listeners
    assert plan.cpus == [0, 1]
    assert web.socket == SocketKey("tcp", "127.0.0.1", 8080, 4)
    assert web.backends[0].protocol == "h1" and raw.backends[0].protocol == "tcp"
    assert web.drain_timeout_ms == 10_000 and raw.drain_timeout_ms == 2_500
    assert web.http is not None and web.http.max_body_bytes == 64 * 1024 * 1024
    assert raw.http is None
    assert raw.backends[0].weight == 3 and raw.backends[0].id == "127.0.0.1:9201"
    assert web.hash_key is None


def test_hash_policy_gets_default_key(base_toml: str) -> None:
    plan = plan_of(base_toml + '[listeners.balancer]\npolicy = "ring_hash"\n')
    assert plan.listeners[1].hash_key == "client_ip"


@pytest.mark.parametrize(
    ("workers", "online", "expected"),
    [("auto", [0, 1, 2], [0, 1, 2]), (2, [3, 1, 2], [1, 2]), ([2, 0], [0, 1, 2], [2, 0])],
)
def test_resolve_cpus(
    workers: int | str | list[int], online: list[int], expected: list[int]
) -> None:
    assert resolve_cpus(workers, online) == expected


def test_plan_travels_over_ipc(base_toml: str) -> None:
    plan = plan_of(base_toml)
    frame = encode(
        Boot(worker_id=0, generation=1, cpu=0, plan=plan, listener_fds={"web": 5, "raw": 6})
    )
    decoder = FrameDecoder("to_worker")
    messages = list(decoder.feed(frame[:7])) + list(decoder.feed(frame[7:]))
    assert messages == [
        Boot(worker_id=0, generation=1, cpu=0, plan=plan, listener_fds={"web": 5, "raw": 6})
    ]


def test_config_hash_changes_with_bytes(base_toml: str) -> None:
    assert plan_of(base_toml).config_hash != plan_of(base_toml + "\n").config_hash


def test_diff_unchanged(base_toml: str) -> None:
    d = diff_plans(plan_of(base_toml), plan_of(base_toml))
    assert d.unchanged and d.sockets_to_open == [] and d.sockets_to_close == []


def test_diff_listener_changes_and_sockets(base_toml: str) -> None:
    old = plan_of(base_toml)
    new_text = base_toml.replace("127.0.0.1:8081", "127.0.0.1:8082").replace(
        "weight = 3", "weight = 4"
    )
    new_text = new_text.replace('name = "web"', 'name = "www"')
    d = diff_plans(old, plan_of(new_text, cpus=[0]))
    assert d.listeners_added == ["www"] and d.listeners_removed == ["web"]
    assert d.listeners_changed == ["raw"]
    assert d.sockets_to_open == [SocketKey("tcp", "127.0.0.1", 8082, 4)]
    assert d.sockets_to_close == [SocketKey("tcp", "127.0.0.1", 8081, 4)]
    assert d.cpus_removed == [1] and d.cpus_added == []


def test_diff_reports_restart_only_keys(base_toml: str) -> None:
    new_text = base_toml.replace("/tmp/eg-test.sock", "/tmp/other.sock")
    d = diff_plans(plan_of(base_toml), plan_of(new_text))
    assert d.restart_required == ["runtime.control_socket"]
    assert not d.unchanged


def test_compile_raises_all_problems() -> None:
    with pytest.raises(ConfigError) as info:
        compile_config(b"[runtime]\ndrain_timeout_ms = 1\n", online_cpus=[0])
    assert len(info.value.problems) == 2  # the timeout and the missing listeners


def test_plan_is_frozen(base_toml: str) -> None:
    plan = plan_of(base_toml)
    with pytest.raises(AttributeError):
        plan.cpus = []  # type: ignore[misc]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=GatewayPlan) == plan
