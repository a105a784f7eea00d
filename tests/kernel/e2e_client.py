"""The client side of the netns end-to-end test (run inside the client namespace).

argv[1]: JSON {"tcp": [[src, sport, dst, dport]...], "udp": [...], "silent": [...],
"stream": [src, sport, dst, dport, min_rounds, per_round, min_s] or null}. Prints a JSON
result; "stream" is [rounds done, datagrams the worker counted].
"""

import json
import socket
import sys
import time


def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_flow(src: str, sport: int, dst: str, dport: int) -> str:
    with socket.socket(family(dst), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(3)
        s.bind((src, sport))
        s.connect((dst, dport))
        data = b""
        while chunk := s.recv(64):
            data += chunk
        return data.decode()


def udp_flow(src: str, sport: int, dst: str, dport: int, timeout_s: float = 3) -> str:
    with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.bind((src, sport))
        for _ in range(3):
            s.sendto(b"q", (dst, dport))
            try:
                return s.recv(64).decode()
            except TimeoutError:
                continue
        return "timeout"


def silent(src: str, sport: int, dst: str, dport: int) -> str:
    try:
        return udp_flow(src, sport, dst, dport, timeout_s=0.3)
    except OSError as exc:
        return f"error {exc}"


def stream(
    src: str, sport: int, dst: str, dport: int, min_rounds: int, per_round: int, min_s: float
) -> list[int]:
    """At least `min_rounds` rounds and at least `min_s` seconds (a loaded machine must not
    end the stream before the test has flipped the programs under it many times)."""
    with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind((src, sport))
        s.connect((dst, dport))
        rounds = 0
        until = time.monotonic() + min_s
        while rounds < min_rounds or time.monotonic() < until:
            for _ in range(per_round):
                s.send(b"s")
            s.send(b"p")
            s.recv(64)  # bounded in flight: the worker has read everything before this
            rounds += 1
        s.send(b"p")
        return [rounds, int(s.recv(64))]


job = json.loads(sys.argv[1])
result = {
    "tcp": [tcp_flow(*f) for f in job.get("tcp", [])],
    "udp": [udp_flow(*f) for f in job.get("udp", [])],
    "silent": [silent(*f) for f in job.get("silent", [])],
    "stream": stream(*job["stream"]) if job.get("stream") else None,
}
print(json.dumps(result))
