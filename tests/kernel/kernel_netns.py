"""Network namespaces for the kernel tests: enter one on this thread, and a veth pair
joining a server and a client namespace (addresses only inside them).

A module of its own so test files import it by name; `from conftest import` resolves to
whichever test directory's conftest pytest loaded first.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000


def setns(path: str) -> None:
    """Enter a network namespace on this thread (Python 3.11 has no os.setns, notes P5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block in netns `name` (mount namespace kept, so bpffs pins stay visible)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(f"/run/netns/{name}")
        yield
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(home, CLONE_NEWNET)
        os.close(home)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Veth:
    """srv namespace (10.77.x.1, fd00:77::1 on `srv_if`) <-> cli namespace (.2, ::2)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
        self.srv, self.cli = f"egs{tag}", f"egc{tag}"
        self.srv_if, self.cli_if = "vsrv", "vcli"
        self.srv_ip, self.cli_ip = "10.77.0.1", "10.77.0.2"
        self.srv_ip6, self.cli_ip6 = "fd00:77::1", "fd00:77::2"

    def up(self) -> None:
        sh("ip", "netns", "add", self.srv)
        sh("ip", "netns", "add", self.cli)
        sh(
            "ip",
            "-n",
            self.srv,
            "link",
            "add",
            self.srv_if,
            "type",
            "veth",
            "peer",
            "name",
            self.cli_if,
            "netns",
            self.cli,
        )
        for ns, ifname, ip, ip6 in (
            (self.srv, self.srv_if, self.srv_ip, self.srv_ip6),
            (self.cli, self.cli_if, self.cli_ip, self.cli_ip6),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", ifname, "nodad")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # native XDP + cpumap redirect on veth needs the sender's TX checksum done (notes P3)
        sh("ip", "netns", "exec", self.cli, "ethtool", "-K", self.cli_if, "tx", "off")
        sh("ip", "netns", "exec", self.srv, "ethtool", "-K", self.srv_if, "tx", "off")

    def down(self) -> None:
        for ns in (self.srv, self.cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
