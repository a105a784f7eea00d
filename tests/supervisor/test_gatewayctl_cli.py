"""gatewayctl as people type it, and as it fails (issue 17, item 17).

`--json` after the subcommand; a caller without access to the socket, a peer that closes
without answering, or answers junk: one line on stderr and a documented exit code, never
a traceback. The supervisor logs each command with the caller's uid and pid.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import BIN, RunningGateway, free_port, tcp_config


def gatewayctl(
    sock: str, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, str(BIN / "gatewayctl"), "--socket", sock, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


class _Mute:
    """A unix socket server that answers each connection with `reply`, then closes."""

    def __init__(self, path: str, reply: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)


@pytest.mark.parametrize(
    ("reply", "says"),
    [(b"", "closed without an answer"), (b"<html>nope</html>\n", "not a control response")],
)
def test_a_peer_without_a_proper_answer_is_one_line_and_exit_69(
    tmp_path: Path, reply: bytes, says: str
) -> None:
    path = str(tmp_path / "mute.sock")
    server = _Mute(path, reply)
    try:
        out = gatewayctl(path, "status")
    finally:
        server.sock.close()
    assert out.returncode == 69, out
    assert "Traceback" not in out.stderr and says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.fixture
def open_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="egw-ctl-"))
    path.chmod(0o755)  # traversable by anyone: the socket's own 0600 is what refuses
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root
def test_json_after_the_subcommand_eperm_and_the_callers_identity(
    tmp_path: Path, echo_backends: list[int], open_dir: Path
) -> None:
    sock = f"{open_dir}/ctl.sock"
    config = tcp_config(free_port(), echo_backends).replace(
        "[runtime]", f'[runtime]\ncontrol_socket = "{sock}"'
    )
    gw = RunningGateway(tmp_path, config)
    gw.control = sock
    try:
        gw.start()
        for args in (("workers", "--json"), ("--json", "workers")):
            out = gatewayctl(sock, *args)
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)["data"]
            assert {r["state"] for r in rows} == {"ready"}
        assert json.loads(gatewayctl(sock, "status", "--json").stdout)["data"]["generation"] == 1

        # The caller's identity is in the control log.
        proc = subprocess.Popen(
            [str(BIN / "gatewayctl"), "--socket", sock, "backends"], stdout=subprocess.DEVNULL
        )
        assert proc.wait(timeout=30) == 0
        [event] = [e for e in gw.events("control_command") if e["peer_pid"] == proc.pid]
        assert event["cmd"] == "backends" and event["peer_uid"] == 0

        # Not allowed: one line, exit 77, and the supervisor never heard of it.
        nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        denied = gatewayctl(sock, "stop", "--now", prefix=nobody)
        assert denied.returncode == 77, denied
        assert "Traceback" not in denied.stderr and "not allowed to use" in denied.stderr
        assert len(denied.stderr.strip().splitlines()) == 1
        assert gw.ctl_json("status")["data"]["state"] == "running"
    finally:
        gw.stop()
