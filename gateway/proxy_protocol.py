"""PROXY protocol headers (HAProxy spec, versions 1 and 2) that carry the client's address.

Owns the wire encoding of the header a gateway sends first on a backend connection so the
backend learns the real client source and the address the client connected to. Pure:
addresses in, bytes out. Must never touch a socket; the worker writes the bytes.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

ProxyVersion = Literal["v1", "v2"]
Address = tuple[str, int]  # (ip literal, port); IPv6 without brackets, may carry a %scope

# Section 2.2: the 12-byte signature that no valid v1 header or HTTP request can start with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_VERSION_PROXY = 0x21  # version 2 (high nibble), command PROXY (low nibble 1)
V2_VERSION_LOCAL = 0x20  # version 2, command LOCAL: the receiver uses the real peer address
V2_TCP4 = 0x11  # AF_INET (high nibble 1) over STREAM (low nibble 1)
V2_TCP6 = 0x21  # AF_INET6 (high nibble 2) over STREAM
V2_UNSPEC = 0x00
V1_MAX_BYTES = 107  # section 2.1: the worst case, "PROXY UNKNOWN ffff:...:ffff ... 65535\r\n"

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProxyHeaderError(ValueError):
    """The addresses cannot be expressed in a PROXY header (not IP literals, bad ports)."""


def _ip(text: str) -> _IP:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise ProxyHeaderError(f"not an IP address: {text!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return ip


def _port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ProxyHeaderError(f"port out of range: {port}")
    return port


def _pair(source: Address, destination: Address) -> tuple[_IP, _IP]:
    """Both addresses in one family (section 2.1: TCP4 and TCP6 carry two of a kind)."""
    src, dst = _ip(source[0]), _ip(destination[0])
    if src.version != dst.version:
        # A v4 client on a v6 listener (or the reverse): express both as IPv6.
        src = src if src.version == 6 else ipaddress.IPv6Address(f"::ffff:{src}")
        dst = dst if dst.version == 6 else ipaddress.IPv6Address(f"::ffff:{dst}")
    return src, dst


def encode_v1(source: Address, destination: Address) -> bytes:
    """`PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n` (section 2.1)."""
    src, dst = _pair(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    line = f"PROXY {family} {src} {dst} {_port(source[1])} {_port(destination[1])}\r\n"
    return line.encode("ascii")


def encode_v2(source: Address, destination: Address) -> bytes:
    """The binary header (section 2.2): signature, 0x21, family/protocol, length, addresses."""
    src, dst = _pair(source, destination)
    ports = struct.pack("!HH", _port(source[1]), _port(destination[1]))
    body = src.packed + dst.packed + ports
    family = V2_TCP4 if src.version == 4 else V2_TCP6
    return V2_SIGNATURE + struct.pack("!BBH", V2_VERSION_PROXY, family, len(body)) + body


def encode_v2_local() -> bytes:
    """A LOCAL header (no addresses): for connections the gateway makes on its own behalf."""
    return V2_SIGNATURE + struct.pack("!BBH", V2_VERSION_LOCAL, V2_UNSPEC, 0)


def encode(version: ProxyVersion, source: Address, destination: Address) -> bytes:
    if version == "v1":
        return encode_v1(source, destination)
    return encode_v2(source, destination)
