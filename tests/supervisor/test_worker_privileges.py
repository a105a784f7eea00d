"""Workers give up every privilege after boot (issue 17, item 3).

A real gateway started as root: its workers run as `runtime.worker_user` with no
capability in any set and no_new_privs, still relay traffic, and — with their exact
credentials — can neither drive the control socket nor use bpf(). With
`worker_user = ""` they keep uid 0 but still hold no capability.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import BIN, RunningGateway, echo_once, free_port, tcp_config

pytestmark = [pytest.mark.root]

CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def as_credentials_of(pid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv with exactly the uid, gid, groups, capabilities and no_new_privs of `pid`."""
    st = proc_status(pid)
    uid, gid = st["Uid"].split()[0], st["Gid"].split()[0]
    groups = st["Groups"].split()
    assert all(int(st[k], 16) == 0 for k in CAP_SETS), st  # setpriv below grants none
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    prefix += [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    prefix += ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    prefix += ["--no-new-privs"] if st["NoNewPrivs"] == "1" else []
    return subprocess.run(prefix + argv, capture_output=True, text=True, timeout=30)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (pytest's tmp dirs are 0700): only the control
    socket's own mode then stands between a worker and the supervisor."""
    path = Path(tempfile.mkdtemp(prefix="egw-ctl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_workers_run_unprivileged_and_cannot_drive_the_supervisor(
    tmp_path, echo_backends, open_dir
) -> None:
    port = free_port()
    config = tcp_config(port, echo_backends, runtime='worker_user = "nobody"')
    config = config.replace("[runtime]", f'[runtime]\ncontrol_socket = "{open_dir}/ctl.sock"')
    gw = RunningGateway(tmp_path, config)
    gw.control = f"{open_dir}/ctl.sock"
    try:
        gw.start()
        _check(gw, port, config)
    finally:
        gw.stop()


def _check(gw: RunningGateway, port: int, config: str) -> None:
    nobody = pwd.getpwnam("nobody")
    workers = gw.ready_workers()
    assert len(workers) == len(os.sched_getaffinity(0))
    assert proc_status(gw.proc.pid)["Uid"].split()[0] == "0"
    for w in workers:
        st = proc_status(w["pid"])
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
        assert st["Groups"] == "", st["Groups"]
        assert {k: int(st[k], 16) for k in CAP_SETS} == dict.fromkeys(CAP_SETS, 0), st
        assert st["NoNewPrivs"] == "1"
    payload = os.urandom(50_000)
    assert echo_once(port, payload) == payload  # sockets inherited: nothing else needed

    victim = workers[0]["pid"]
    attempt = as_credentials_of(
        victim, [str(BIN / "gatewayctl"), "--socket", gw.control, "stop", "--now"]
    )
    assert attempt.returncode != 0, attempt.stdout
    assert "Permission denied" in attempt.stderr or "permission" in attempt.stderr.lower()
    probe_bpf = (  # bpf(BPF_MAP_CREATE, {ARRAY, key 4, value 4, 1 entry}): root gets an fd
        "import ctypes, struct; l = ctypes.CDLL(None, use_errno=True); "
        "a = ctypes.create_string_buffer(struct.pack('4I', 2, 4, 4, 1), 128); "
        "r = l.syscall(321, 0, a, 128); print(r, ctypes.get_errno())"
    )
    bpf = as_credentials_of(victim, [sys.executable, "-I", "-S", "-c", probe_bpf])
    assert bpf.stdout.split() == ["-1", "1"], bpf  # EPERM
    assert gw.ctl_json("status")["data"]["state"] == "running"  # the attempt did nothing

    # "" keeps the supervisor's user: uid 0, but still no capability at all.
    gw.write_config(config.replace('worker_user = "nobody"', 'worker_user = ""'))
    out = gw.ctl("reload")
    assert out.returncode == 0, out.stderr
    for w in gw.ready_workers():
        st = proc_status(w["pid"])
        assert st["Uid"].split()[0] == "0"
        assert all(int(st[k], 16) == 0 for k in CAP_SETS), st
        assert st["NoNewPrivs"] == "1"
    assert echo_once(port, b"as root without caps") == b"as root without caps"
    dropped = gw.events("worker_privileges_dropped")
    assert {e["user"] for e in dropped} == {"nobody", "root"}
    assert all(e["bounding_set_cleared"] for e in dropped)
