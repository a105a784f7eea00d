"""The kernel datapath wired into the real gateway (supervisor + 2 pinned workers).

XDP on the server-side veth (generic and native) plus the reuseport program: each flow is
handled by the worker on the CPU the steering plan predicts (per-worker handled counts,
with deliberately uneven splits a hash would not produce); the deny list drops and
counts; a reload and a drain during traffic lose nothing; `drain --no-replace` takes the
CPU out of the XDP slots and the sockarray; a second supervisor adopts the pins of a
SIGKILLed one; a plain stop leaves nothing behind; `[kernel] required` exits 69.
UDP flows (a `protocol = "udp"` listener, one session per source) are steered the same way.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_netns import (
    NEW_PORT,
    TCP6_PORT,
    TCP_PORT,
    UDP_PORT,
    NetnsGateway,
    echo_flow,
    gateway_config,
    pick_flows,
    start_backend,
    udp_flow,
    wait_for,
)
from kernel_netns import Veth, in_netns, setns, sh
from running_gateway import RunningGateway, free_port

from gateway.errors import EXIT_UNAVAILABLE
from kernel import bpffs

pytestmark = [pytest.mark.root]

DENIED_SRC = "10.77.0.3"


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"gwtest-{uuid.uuid4().hex[:8]}"
    yield name
    pins = bpffs.instance_dir(name)
    if pins.exists():
        subprocess.run(["rm", "-rf", str(pins)], check=False)


@pytest.fixture
def backend(veth: Veth) -> Iterator[None]:
    proc = start_backend(veth)
    yield
    proc.kill()
    proc.wait()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[NetnsGateway]]:
    started: list[NetnsGateway] = []
    yield started
    for gw in started:
        gw.stop()


def xdp_on(veth: Veth) -> str:
    out = subprocess.run(
        ["ip", "-n", veth.srv, "link", "show", veth.srv_if], capture_output=True, text=True
    )
    return out.stdout


def run_flows(veth: Veth, flows: list[tuple[str, int, str, int]]) -> None:
    with in_netns(veth.cli):
        for flow in flows:
            echo_flow(*flow)


def check_steering(gw: NetnsGateway, first_port: int) -> None:
    """Uneven predicted splits (TCP v4 21/7, TCP v6 5/9, UDP 3/8 sessions) must show up
    exactly in the per-worker handled counts."""
    v = gw.veth
    stats = gw.kernel_stats()
    assert stats["cpus"] == [0, 1]
    flows = pick_flows(stats, v.cli_ip, v.srv_ip, TCP_PORT, {0: 21, 1: 7}, first_port)
    flows += pick_flows(stats, v.cli_ip6, v.srv_ip6, TCP6_PORT, {0: 5, 1: 9}, first_port)
    udp = pick_flows(stats, v.cli_ip, v.srv_ip, UDP_PORT, {0: 3, 1: 8}, first_port, proto=17)
    before = gw.settled_handled_by_cpu()
    run_flows(v, flows)
    with in_netns(v.cli):
        for flow in udp:
            udp_flow(*flow)
    want = {0: before[0] + 29, 1: before[1] + 24}
    wait_for(
        lambda: gw.handled_by_cpu() == want,
        what=f"handled per cpu {want} (from {before})",
        seen=lambda: (gw.handled_by_cpu(), gw.workers()),
    )
    after = gw.kernel_stats()
    assert after["reuseport"]["fallback_empty_slot"] == [0, 0]
    assert sum(after["reuseport"]["selected_cpu"]) >= sum(stats["reuseport"]["selected_cpu"]) + 53


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["generic", "native"])
def test_flows_land_on_the_predicted_worker_and_deny_drops(
    mode: str,
    veth: Veth,
    obj_dir: Path,
    instance: str,
    backend: None,
    gateways: list[NetnsGateway],
    tmp_path: Path,
) -> None:
    gw = NetnsGateway(tmp_path, gateway_config(veth, instance, mode, cap=100000), veth, obj_dir)
    gateways.append(gw)
    gw.start()
    assert f"xdp{'generic' if mode == 'generic' else ''}" in xdp_on(veth)
    assert [e["how"] for e in gw.events("kernel_xdp_attached")] == [mode]
    assert not gw.events("kernel_fallback")
    check_steering(gw, 20000)
    stats = gw.kernel_stats()
    assert stats["new_flow_cap_per_sec"] == 100000
    assert sum(stats["xdp"]["redirect_tcp"]) >= 42 * 3

    # deny list: the configured entry is there; a runtime entry drops a new source
    assert gw.ctl_json("kernel", "deny", "list")["data"]["deny"] == ["10.77.0.200/32"]
    bad = gw.ctl("kernel", "deny", "add", "10.77.0.300/24")
    assert bad.returncode == 1 and "is not a CIDR" in bad.stderr
    assert gw.ctl("kernel", "deny", "add", f"{DENIED_SRC}/32").returncode == 0
    sh("ip", "-n", veth.cli, "addr", "add", f"{DENIED_SRC}/24", "dev", veth.cli_if)
    with in_netns(veth.cli), pytest.raises(OSError):
        echo_flow(DENIED_SRC, 30000, veth.srv_ip, TCP_PORT, timeout_s=1.0)
    assert sum(gw.kernel_stats()["xdp"]["drop_denied"]) >= 1
    assert gw.ctl("kernel", "deny", "del", f"{DENIED_SRC}/32").returncode == 0
    run_flows(veth, [(DENIED_SRC, 30001, veth.srv_ip, TCP_PORT)])
    gone = gw.ctl("kernel", "deny", "del", f"{DENIED_SRC}/32")
    assert gone.returncode == 1 and "not in the deny list" in gone.stderr

    # the counters reach /metrics
    def exported() -> bool:
        return any(
            line.startswith("expressgateway_kernel_packets_total")
            and 'reason="redirect_tcp"' in line
            and float(line.rsplit(" ", 1)[1]) > 0
            for line in gw.metrics_text().splitlines()
        )

    wait_for(exported, timeout_s=6, what="kernel counters in /metrics")

    # a plain stop unloads: no XDP on the interface, no pins
    assert gw.stop() == 0
    assert "xdp" not in xdp_on(veth)
    assert not bpffs.instance_dir(instance).exists()


class Traffic:
    """Sequential flows from the client namespace until stopped; every failure is kept."""

    def __init__(self, veth: Veth, dport: int, first_port: int) -> None:
        self.veth, self.dport, self.sport = veth, dport, first_port
        self.done, self.failures = 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        setns(f"/run/netns/{self.veth.cli}")  # this thread only
        while not self._stop.is_set():
            try:
                echo_flow(self.veth.cli_ip, self.sport, self.veth.srv_ip, self.dport)
                self.done += 1
            except (OSError, AssertionError) as exc:
                self.failures.append(f"{self.sport}: {exc!r}")
            self.sport += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.slow
def test_reload_and_drains_under_traffic_lose_nothing(
    veth: Veth,
    obj_dir: Path,
    instance: str,
    backend: None,
    gateways: list[NetnsGateway],
    tmp_path: Path,
) -> None:
    gw = NetnsGateway(tmp_path, gateway_config(veth, instance, "generic"), veth, obj_dir)
    gateways.append(gw)
    gw.start()
    with Traffic(veth, TCP_PORT, 40000) as traffic:
        wait_for(lambda: traffic.done >= 20, what="traffic flowing")
        # reload adding a listener: its sockets join the maps, old ones stay steered
        gw.write_config(gateway_config(veth, instance, "generic", extra_listener=True))
        reload = gw.ctl("reload")
        assert reload.returncode == 0, reload.stderr
        at = traffic.done
        wait_for(lambda: traffic.done >= at + 20, what="traffic after reload")
        run_flows(veth, [(veth.cli_ip, 50000 + i, veth.srv_ip, NEW_PORT) for i in range(10)])
        drain = gw.ctl("drain", "0")
        assert drain.returncode == 0, drain.stderr
        at = traffic.done
        wait_for(lambda: traffic.done >= at + 20, what="traffic after drain 0")
        wait_for(lambda: len(gw.ready_workers()) == 2 and len(gw.workers()) == 2, what="drained")
    assert traffic.failures == [] and traffic.done > 40
    stats = gw.kernel_stats()
    assert stats["cpus"] == [0, 1] and sorted(set(stats["cpu_slots"])) == [0, 1]
    assert stats["reuseport"]["fallback_empty_slot"] == [0, 0]
    assert stats["reuseport"]["fallback_no_group"] == [0, 0]
    check_steering(gw, 20000)  # the replacement worker on cpu 0 gets cpu 0's flows

    # drain --no-replace: cpu 1 leaves the XDP slots and the sockarray; nothing is lost
    with Traffic(veth, TCP_PORT, 45000) as traffic:
        wait_for(lambda: traffic.done >= 10, what="traffic flowing")
        wait_for(lambda: len(gw.ready_workers()) == 2, what="both workers ready")
        drain = gw.ctl("drain", "1", "--no-replace")
        assert drain.returncode == 0, drain.stderr
        stats = gw.kernel_stats()
        assert stats["cpus"] == [0] and set(stats["cpu_slots"]) == {0}
        at = traffic.done
        wait_for(lambda: traffic.done >= at + 30, what="traffic after drain --no-replace")
    assert traffic.failures == []
    wait_for(lambda: [w["cpu"] for w in gw.workers()] == [0], what="cpu 1 worker gone")
    before = gw.settled_handled_by_cpu()[0]
    run_flows(veth, [(veth.cli_ip, 52000 + i, veth.srv_ip, TCP_PORT) for i in range(12)])
    wait_for(lambda: gw.handled_by_cpu()[0] == before + 12, what="all flows on cpu 0")
    after = gw.kernel_stats()
    assert sum(after["xdp"]["pass_no_cpu"]) == 0
    assert after["reuseport"]["fallback_empty_slot"] == [0, 0]


@pytest.mark.slow
def test_second_supervisor_adopts_after_sigkill(
    veth: Veth,
    obj_dir: Path,
    instance: str,
    backend: None,
    gateways: list[NetnsGateway],
    tmp_path: Path,
) -> None:
    config = gateway_config(veth, instance, "native")
    (tmp_path / "a").mkdir()
    first = NetnsGateway(tmp_path / "a", config, veth, obj_dir)
    gateways.append(first)
    first.start()
    run_flows(veth, [(veth.cli_ip, 21000 + i, veth.srv_ip, TCP_PORT) for i in range(10)])
    seen = first.kernel_stats()
    first.kill()
    # the pinned link keeps steering in place while no supervisor runs
    assert "xdp" in xdp_on(veth) and bpffs.instance_dir(instance).exists()

    (tmp_path / "b").mkdir()
    second = NetnsGateway(tmp_path / "b", config, veth, obj_dir)
    gateways.append(second)
    second.start()
    opened = second.events("kernel_datapath_opened")
    assert opened and opened[0]["adopted"] is True
    assert opened[0]["hash_seed"] == seen["hash_seed"]
    assert [e["how"] for e in second.events("kernel_xdp_attached")] == ["replaced"]
    stats = second.kernel_stats()
    assert sum(stats["xdp"]["redirect_tcp"]) >= sum(seen["xdp"]["redirect_tcp"])  # carried on
    check_steering(second, 22000)
    assert second.stop() == 0
    assert "xdp" not in xdp_on(veth)
    assert not bpffs.instance_dir(instance).exists()


def test_required_with_a_missing_interface_exits_69(tmp_path: Path, instance: str) -> None:
    config = f"""
[kernel]
enabled = true
required = true
interfaces = ["egnone{uuid.uuid4().hex[:6]}"]
instance = "{instance}"

[[listeners]]
name = "echo"
address = "127.0.0.1:{free_port()}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{free_port()}"
"""
    gw = RunningGateway(tmp_path, config)
    gw.start(wait_ready=False)
    assert gw.proc is not None
    assert gw.proc.wait(timeout=20) == EXIT_UNAVAILABLE
    gw.stop()
    [event] = gw.events("kernel_unavailable")
    assert "required = true" in event["error"] and "does not exist" in event["error"]
    assert not gw.events("worker_started") and not gw.events("supervisor_ready")
    assert not bpffs.instance_dir(instance).exists()


def test_not_required_falls_back_per_piece_and_still_steers(tmp_path: Path, instance: str) -> None:
    """A missing interface without `required`: one kernel_fallback event, the datapath
    still runs (reuseport steering, no XDP), answers gatewayctl, and unloads at stop."""
    backend_port = free_port()
    ifname = f"egnone{uuid.uuid4().hex[:6]}"
    config = f"""
[runtime]
workers = 2
[kernel]
enabled = true
interfaces = ["{ifname}"]
instance = "{instance}"

[[listeners]]
name = "echo"
address = "127.0.0.1:{free_port()}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
    gw = RunningGateway(tmp_path, config).start()
    try:
        [event] = gw.events("kernel_fallback")
        assert event["piece"] == f"interface:{ifname}" and "does not exist" in event["fallback"]
        stats = gw.ctl_json("kernel", "stats")["data"]
        assert stats["cpus"] == [0, 1] and stats["interfaces"] == {}
        assert bpffs.instance_dir(instance).exists()
        bad = gw.ctl("kernel", "frobnicate")
        assert bad.returncode == 1 and "usage: gatewayctl kernel" in bad.stderr
    finally:
        assert gw.stop() == 0
    assert not bpffs.instance_dir(instance).exists()


@pytest.mark.parametrize(
    ("kernel", "listeners", "problem"),
    [
        (
            'interfaces = ["veth0", "veth0"]',
            [("a", "127.0.0.1:80")],
            "kernel.interfaces[1]: 'veth0' is listed twice",
        ),
        (
            'interfaces = ["veth0"]',
            [("a", "127.0.0.1:80"), ("b", "127.0.0.2:80")],
            "listeners[1].address: with kernel.enabled = true, listeners on one tcp port",
        ),
    ],
)
def test_kernel_validation(kernel: str, listeners: list[tuple[str, str]], problem: str) -> None:
    from gateway.config.plan import compile_config
    from gateway.errors import ConfigError

    text = f"[kernel]\nenabled = true\n{kernel}\n" + "".join(
        f'[[listeners]]\nname = "{n}"\naddress = "{a}"\nprotocol = "tcp"\n'
        f'[[listeners.backends]]\naddress = "127.0.0.1:9"\n'
        for n, a in listeners
    )
    with pytest.raises(ConfigError) as info:
        compile_config(text.encode(), online_cpus=[0, 1])
    assert any(p.render().startswith(problem) for p in info.value.problems), info.value.render()
    # the same listeners are fine without the datapath
    compile_config(
        text.replace("enabled = true", "enabled = false")
        .replace('"veth0", "veth0"', '"veth0"')
        .encode(),
        online_cpus=[0, 1],
    )
