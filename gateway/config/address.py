"""Parse `host:port` strings as written in the config (IPv6 must be bracketed).

Pure: never resolves names. Listener addresses must be IP literals; backend
addresses may name a host that is resolved at dial time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class AddressError(ValueError):
    """The text is not a valid `host:port`; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # without brackets
    port: int
    family: int  # 4, 6, or 0 for a hostname

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == 6 else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.family == 0:
            return self.host.lower() in ("localhost", "localhost.")
        return ipaddress.ip_address(self.host).is_loopback


def parse_host_port(text: str, *, allow_hostname: bool) -> HostPort:
    """Parse `1.2.3.4:80`, `[::1]:80` or (if allowed) `name.example:80`."""
    if not text:
        raise AddressError(
            "must not be empty; expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080"
        )
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise AddressError(f"expected [IPv6]:port, e.g. [::1]:8080, got {text!r}")
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"{host!r} inside brackets is not an IPv6 address") from None
        return HostPort(ip.compressed, _port(port_text, text), 6)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"expected host:port, e.g. 127.0.0.1:8080, got {text!r}")
    if ":" in host:
        raise AddressError(f"IPv6 addresses must be bracketed, e.g. [::1]:8080, got {text!r}")
    port = _port(port_text, text)
    try:
        return HostPort(str(ipaddress.IPv4Address(host)), port, 4)
    except ValueError:
        pass
    if not allow_hostname:
        raise AddressError(
            f"listener addresses must be IP literals (e.g. 0.0.0.0:{port} or [::]:{port}), got {text!r}"
        )
    if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
        raise AddressError(f"{host!r} is neither an IP address nor a valid host name")
    return HostPort(host, port, 0)


def _port(port_text: str, whole: str) -> int:
    if not port_text.isdigit() or len(port_text) > 5:
        raise AddressError(f"port must be a number 1..65535, got {port_text!r} in {whole!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise AddressError(f"port must be 1..65535, got {port} in {whole!r}")
    return port
