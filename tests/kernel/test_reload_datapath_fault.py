"""A reload the kernel refuses is a failed reload, never a dead gateway (issue 17, item 2).

The real gateway with the kernel datapath on (reuseport steering; the one interface named
is absent, so no XDP). The
test fills the pinned IPv4 deny map to its capacity from outside, as an operator's
`gatewayctl kernel deny add` loop would, then reloads a file that adds one more CIDR: the
map write fails (BpfError), the reload is reported failed, generation 1 keeps serving
with its kernel settings, and a later reload that fits succeeds.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import DemoBackends, RunningGateway, echo_once, free_port

from kernel import bpffs
from kernel.libbpf import check, lib
from kernel.maps import ABI_CONSTANTS, MapView

pytestmark = [pytest.mark.root]


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"gwtest-{uuid.uuid4().hex[:8]}"
    yield name
    pins = bpffs.instance_dir(name)
    if pins.exists():
        subprocess.run(["rm", "-rf", str(pins)], check=False)


def _config(port: int, backend: int, instance: str, deny: list[str]) -> str:
    return f"""
[runtime]
drain_timeout_ms = 1000
[kernel]
enabled = true
interfaces = ["egnone{instance[-6:]}"]
instance = "{instance}"
deny = {deny!r}

[[listeners]]
name = "echo"
address = "127.0.0.1:{port}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{backend}"
"""


def _fill_deny_map(instance: str) -> int:
    """Add /32 entries until the pinned gw_deny_v4 is full; returns how many were added."""
    pin = bpffs.instance_dir(instance) / f"maps-v{ABI_CONSTANTS['GW_ABI_VERSION']}" / "gw_deny_v4"
    fd = check(lib.bpf_obj_get(str(pin).encode()), f"open {pin}")
    try:
        view = MapView("gw_deny_v4", fd, "struct gw_lpm_v4", "__u32")
        added = 0
        for i in range(ABI_CONSTANTS["GW_DENY_ENTRIES"] + 1):
            addr = [10, 200 + (i >> 16), (i >> 8) & 0xFF, i & 0xFF]
            try:
                view.update({"prefixlen": 32, "addr": addr}, 1)
            except OSError:
                break
            added += 1
        return added
    finally:
        os.close(fd)


def test_reload_refused_by_a_full_deny_map_keeps_generation_1(
    tmp_path: Path, instance: str
) -> None:
    port, backend = free_port(), free_port()
    backends = DemoBackends(tcp_echo=[backend])
    gw = RunningGateway(tmp_path, _config(port, backend, instance, ["192.0.2.0/24"]))
    try:
        gw.start()
        before = {w["pid"] for w in gw.ready_workers()}
        added = _fill_deny_map(instance)
        assert 0 < added < ABI_CONSTANTS["GW_DENY_ENTRIES"], added  # ours holds one already
        gw.write_config(_config(port, backend, instance, ["192.0.2.0/24", "198.51.100.0/24"]))
        out = gw.ctl("reload")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "kernel datapath:" in out.stderr and "old generation keeps serving" in out.stderr
        assert gw.proc is not None and gw.proc.poll() is None
        status = gw.ctl_json("status")["data"]
        assert status["generation"] == 1 and status["state"] == "running"
        assert status["last_reload"]["result"] == "datapath_error"
        assert {w["pid"] for w in gw.ready_workers()} == before
        assert echo_once(port, b"still served") == b"still served"
        deny = gw.ctl_json("kernel", "deny", "list")["data"]["deny"]
        assert "192.0.2.0/24" in deny and "198.51.100.0/24" not in deny
        [event] = gw.events("reload_datapath_failed")
        assert event["generation"] == 2
        # Room again: the same file reloads.
        assert gw.ctl("kernel", "deny", "del", "10.200.0.0/32").returncode == 0
        out = gw.ctl("reload")
        assert out.returncode == 0, out.stderr
        assert gw.ctl_json("status")["data"]["generation"] == 2  # the abandoned one left none
        assert not before & {w["pid"] for w in gw.ready_workers()}
        assert echo_once(port, b"new generation") == b"new generation"
    finally:
        gw.stop()
        backends.stop()
