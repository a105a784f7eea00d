"""Run inside `unshare --net` (root): a udp listener whose second backend's name hangs in
DNS. Prints one JSON line: reply latencies of the answered clients and the number of
lookups the workers made of the dead name (`udp_backend_unresolved` events).

The namespace has loopback and a veth (peer down) holding the resolver's address range,
so DNS queries leave into nothing and time out (RES_OPTIONS sets 2 s); nothing ever
leaves the namespace.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
from running_gateway import DemoBackends, RunningGateway, free_port


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def main() -> None:
    tmp = Path(sys.argv[1])
    sh("ip", "link", "set", "lo", "up")
    resolv = Path("/etc/resolv.conf").read_text()
    server = re.search(r"^nameserver\s+([0-9.]+)", resolv, re.M)
    ns_ip = server.group(1) if server else "10.255.255.53"
    # A veth whose peer answers nothing (not even ARP): queries to the resolver vanish.
    sh("ip", "link", "add", "dnsvoid", "type", "veth", "peer", "name", "dnsvoid1")
    sh("ip", "addr", "add", f"{ns_ip.rsplit('.', 1)[0]}.1/24", "dev", "dnsvoid")
    sh("ip", "link", "set", "dnsvoid", "up")
    live = free_port(socket.SOCK_DGRAM)
    backends = DemoBackends(udp_echo=[live])
    port = free_port(socket.SOCK_DGRAM)
    gw = RunningGateway(
        tmp,
        f"""
[runtime]
workers = 2
[[listeners]]
name = "dgram"
address = "127.0.0.1:{port}"
protocol = "udp"
[listeners.outlier]
consecutive_failures = 1000
[[listeners.backends]]
address = "127.0.0.1:{live}"
[[listeners.backends]]
address = "backend.unresolvable.test:53"
""",
    )
    latencies = []
    try:
        gw.start()
        os.sched_setaffinity(0, {0})
        socks = []
        for i in range(40):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.1)
            socks.append(s)
            sent = time.monotonic()
            s.sendto(b"client %d" % i, ("127.0.0.1", port))
            try:
                s.recvfrom(65535)
                latencies.append(time.monotonic() - sent)
            except TimeoutError:
                pass  # sent to the dead name: dropped at once, counted
        time.sleep(0.5)
        lookups = len(gw.events("udp_backend_unresolved"))
    finally:
        gw.stop()
        backends.stop()
    print(json.dumps({"latencies": latencies, "lookups": lookups}))


if __name__ == "__main__":
    main()
