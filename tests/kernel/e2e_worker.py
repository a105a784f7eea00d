"""A worker for the netns end-to-end test: pinned to one CPU, serving inherited sockets.

argv: cpu fd...  TCP: reply "<cpu> <SO_INCOMING_CPU>" and close. UDP: b"s" is counted per
peer, b"p" is answered with that count, anything else with "<cpu>". Exits on stdin EOF.
"""

import os
import selectors
import socket
import sys

cpu = int(sys.argv[1])
os.sched_setaffinity(0, {cpu})
sel = selectors.DefaultSelector()
for fd in map(int, sys.argv[2:]):
    s = socket.socket(fileno=fd)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
sel.register(sys.stdin, selectors.EVENT_READ)
counts: dict[object, int] = {}
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is sys.stdin:
            sys.exit(0)
        assert isinstance(s, socket.socket)
        if s.type == socket.SOCK_STREAM:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                continue
            incoming = conn.getsockopt(socket.SOL_SOCKET, socket.SO_INCOMING_CPU)
            conn.setblocking(True)
            conn.sendall(f"{cpu} {incoming}".encode())
            conn.close()
            continue
        while True:
            try:
                data, peer = s.recvfrom(2048)
            except BlockingIOError:
                break
            if data == b"s":
                counts[peer] = counts.get(peer, 0) + 1
            elif data == b"p":
                s.sendto(str(counts.get(peer, 0)).encode(), peer)
            else:
                s.sendto(str(cpu).encode(), peer)
