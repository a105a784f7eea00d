"""bpffs and pins that can be trusted (issue 17, item 16).

- Pins are adopted only from directories owned by us (or root) that nobody else may
  write; what we create is 0700. A bpffs mounted without a mode is 01777, so any local
  user could otherwise create our directory first and hand us maps of their choosing.
- The supervisor mounts bpffs with an explicit mode (checked in a private mount namespace).
- An XDP link left pinned by a crashed supervisor on an interface the next config does not
  steer is detached, instead of steering forever with nobody owning it.
- The shipped systemd unit reaches its pins: its own ExecStartPre line runs in a private
  mount namespace, then the real datapath code opens, pins and re-adopts under the unit's
  credentials (uid, capability bounding set, no_new_privs).
"""

from __future__ import annotations

import os
import pwd
import shlex
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_netns import NetnsGateway, gateway_config
from kernel_netns import Veth
from running_gateway import ROOT, RunningGateway, free_port

from kernel import bpffs
from kernel.datapath import Datapath

pytestmark = [pytest.mark.root]

UNIT = ROOT / "systemd" / "expressgateway.service"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pins_are_adopted_only_from_directories_nobody_else_can_write(
    obj_dir: Path, pin_root: Path
) -> None:
    dp = Datapath.open("t", obj_dir, pin_root=pin_root)
    dp.close(unload=False)
    inst = pin_root / "t"
    for d in (pin_root, inst, inst / "links", *inst.glob("maps-v*")):
        assert _mode(d) == 0o700, d
    nobody = pwd.getpwnam("nobody")
    for tamper, says in (
        (lambda: inst.chmod(0o777), "writable by group or others"),
        (lambda: os.chown(inst, nobody.pw_uid, nobody.pw_gid), f"owned by uid {nobody.pw_uid}"),
        (lambda: os.chown(pin_root, nobody.pw_uid, nobody.pw_gid), f"owned by uid {nobody.pw_uid}"),
    ):
        tamper()
        with pytest.raises(bpffs.UnsafePinDir, match=says):
            Datapath.open("t", obj_dir, pin_root=pin_root)
        inst.chmod(0o700)
        os.chown(inst, 0, 0)
        os.chown(pin_root, 0, 0)
    dp = Datapath.open("t", obj_dir, pin_root=pin_root)  # restored: adopted again
    try:
        assert not dp.created
    finally:
        dp.close(unload=True)


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"gwtest-{uuid.uuid4().hex[:8]}"
    yield name
    pins = bpffs.instance_dir(name)
    if pins.exists():
        subprocess.run(["rm", "-rf", str(pins)], check=False)


def test_supervisor_refuses_a_pin_directory_another_user_could_write(
    tmp_path: Path, instance: str
) -> None:
    bpffs.make_pin_dirs(bpffs.PIN_ROOT)
    bpffs.instance_dir(instance).mkdir(mode=0o700)
    bpffs.instance_dir(instance).chmod(0o777)  # as if another user had prepared it
    config = f"""
[kernel]
enabled = true
interfaces = ["egnone{instance[-6:]}"]
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
    try:
        gw.wait_ready()  # not required: it serves, without the datapath
        [event] = gw.events("kernel_open_failed")
        assert "writable by group or others" in event["error"]
        assert gw.ctl("kernel", "stats").returncode == 1
    finally:
        gw.stop()
    assert not list(bpffs.instance_dir(instance).iterdir())  # nothing pinned there


def _in_private_mount_ns(script: str) -> subprocess.CompletedProcess[str]:
    """`script` under sh in a private mount namespace whose /sys/fs/bpf starts unmounted:
    nothing it mounts or pins is visible outside, and the host's pins are untouched."""
    wrapped = "umount -l /sys/fs/bpf 2>/dev/null; " + script
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", wrapped],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_supervisor_mounts_bpffs_with_an_explicit_mode() -> None:
    code = (
        "from kernel import bpffs; assert bpffs.ensure_mounted(); "
        "import os, stat; print(oct(stat.S_IMODE(os.stat('/sys/fs/bpf').st_mode)))"
    )
    out = _in_private_mount_ns(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    assert out.returncode == 0, out.stderr
    # bpffs always sets the sticky bit on its root; without a mode it would be 0o1777
    assert out.stdout.split() == ["0o1700"], out.stdout


def _unit_values(key: str) -> list[str]:
    found = []
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{key}="):
            found.append(line.split("=", 1)[1])
    return found


def test_the_shipped_unit_reaches_its_pins(obj_dir: Path) -> None:
    [prepare] = [v for v in _unit_values("ExecStartPre") if "mount -t bpf" in v]
    prefix, _, command = prepare.partition("/bin/sh -c ")
    assert "+" in prefix  # runs with full privileges, in the host mount namespace
    user = (_unit_values("User") or ["root"])[0]
    [bounding] = _unit_values("CapabilityBoundingSet")
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in bounding.split())
    nnp = _unit_values("NoNewPrivileges") == ["yes"]
    datapath = (
        "import os; from pathlib import Path; from kernel.datapath import Datapath; "
        f"d = Datapath.open('unitcheck', Path({str(obj_dir)!r})); c = d.created; "
        "d.close(unload=False); "
        f"d = Datapath.open('unitcheck', Path({str(obj_dir)!r})); "
        "print(c, d.created, sorted(os.listdir('/sys/fs/bpf/expressgateway/unitcheck'))); "
        "d.close(unload=True)"
    )
    as_unit = ["setpriv", f"--reuid={user}", "--init-groups" if user != "root" else "--keep-groups"]
    as_unit += [f"--bounding-set=-all,{caps}", "--inh-caps=-all"]
    as_unit += ["--no-new-privs"] if nnp else []
    script = "; ".join(
        [
            f"sh -c {command}",  # the unit's own line, quoting included
            "stat -c '%a %U' /sys/fs/bpf /sys/fs/bpf/expressgateway",
            shlex.join([*as_unit, sys.executable, "-c", datapath]),
        ]
    )
    out = _in_private_mount_ns(script)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["1700 root", "700 root"], lines
    created, adopted, entries = lines[2].split(" ", 2)
    assert (created, adopted) == ("True", "False"), lines  # pinned, then adopted
    assert "'links'" in entries and "'maps-v" in entries, lines


@pytest.mark.slow
def test_a_crashed_runs_link_on_an_interface_no_longer_steered_is_detached(
    veth: Veth, obj_dir: Path, instance: str, tmp_path: Path
) -> None:
    config = gateway_config(veth, instance, "generic")
    (tmp_path / "a").mkdir()
    first = NetnsGateway(tmp_path / "a", config, veth, obj_dir).start()
    try:
        first.kill()  # a crash: the pinned link keeps XDP on the interface
    finally:
        first.stop()
    assert "xdp" in _xdp_on(veth)
    assert (bpffs.instance_dir(instance) / "links" / veth.srv_if).exists()

    # The next supervisor's file no longer names that interface.
    elsewhere = f"egnone{instance[-6:]}"
    moved = config.replace(f'interfaces = ["{veth.srv_if}"]', f'interfaces = ["{elsewhere}"]')
    (tmp_path / "b").mkdir()
    second = NetnsGateway(tmp_path / "b", moved.replace("required = true", ""), veth, obj_dir)
    try:
        second.start()
        [event] = second.events("kernel_stale_link_detached")
        assert event["interface"] == veth.srv_if
        assert "xdp" not in _xdp_on(veth)
        assert not (bpffs.instance_dir(instance) / "links" / veth.srv_if).exists()
        assert second.events("kernel_datapath_opened")[0]["adopted"] is True  # maps kept
    finally:
        assert second.stop() == 0


def _xdp_on(veth: Veth) -> str:
    out = subprocess.run(
        ["ip", "-n", veth.srv, "link", "show", veth.srv_if], capture_output=True, text=True
    )
    return out.stdout
