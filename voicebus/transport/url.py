"""Bus URLs: ``memory://[NAME]`` and
``mqtt[s]://[user:pass@]host[:port][,host2[:port2]...][?ca=..&cert=..&protocol=3.1.1]``.

Several comma-separated brokers in one MQTT URL are failover addresses: the
transport connects to the first that answers and, after a loss, to the next.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import VoicebusError

DEFAULT_URL = "memory://"

Address = tuple[str, int]
"""A broker address: host, port."""


@dataclass(frozen=True)
class BusURL:
    """A parsed bus URL: ``memory://[NAME]`` or ``mqtt[s]://[user:pass@]host[:port],...``.

    `host` and `port` are the first broker's; `addresses` lists every broker named,
    in order (the failover order)."""

    scheme: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = ""
    query: dict[str, str] = field(default_factory=dict)
    addresses: tuple[Address, ...] = ()

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def brokers(self) -> tuple[Address, ...]:
        """Every broker address, in failover order (at least the first)."""
        return self.addresses or ((self.host, self.port),)

    def redacted(self) -> str:
        """The URL without its password (for logs and errors)."""
        if self.scheme == "memory":
            return f"memory://{self.name}"
        user = f"{self.username}:***@" if self.username else ""
        return f"{self.scheme}://{user}{','.join(map(format_address, self.brokers))}"


def format_address(address: Address) -> str:
    """``host:port`` (``[v6]:port`` for an IPv6 literal)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_url(url: str | None) -> str:
    """`url`, else ``$VOICEBUS_URL``, else ``memory://``."""
    return url or os.environ.get("VOICEBUS_URL") or DEFAULT_URL


def parse_url(url: str) -> BusURL:
    """Parse a bus URL, with a clear error for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "memory":
        return BusURL("memory", name=parts.netloc + parts.path.strip("/"), query=query)
    if scheme in ("mqtt", "mqtts"):
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        default_port = 8883 if scheme == "mqtts" else 1883
        addresses = tuple(
            _address(url, item, default_port) for item in hostlist.split(",")
        )
        username = password = None
        if userinfo:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) if user else None
            password = unquote(secret) if colon and secret else None
        host, port = addresses[0]
        return BusURL(scheme, host, port, username, password, query=query, addresses=addresses)
    raise VoicebusError(
        f"unsupported bus URL {_redact(url)!r}: use memory://, mqtt://host[:port] or "
        "mqtts://host[:port]"
    )


def _address(url: str, item: str, default_port: int) -> Address:
    """One ``host[:port]`` of an MQTT URL (``[v6]:port`` for IPv6)."""
    item = item.strip()
    host, port_text = item, ""
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise VoicebusError(f"bus URL {_redact(url)!r} has an unclosed IPv6 bracket")
        host, rest = item[1:end], item[end + 1 :]
        if rest and not rest.startswith(":"):
            raise VoicebusError(f"bus URL {_redact(url)!r} has an invalid address {item!r}")
        port_text = rest[1:]
    elif ":" in item:
        host, _, port_text = item.rpartition(":")
    if not host:
        raise VoicebusError(
            f"bus URL {_redact(url)!r} has no host in {item!r} "
            "(mqtt://host[:port][,host2[:port2]])"
        )
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise VoicebusError(f"bus URL {_redact(url)!r} has an invalid port {port_text!r}")
    return host.lower(), int(port_text)


def _redact(url: str) -> str:
    """`url` with any password replaced by ``***`` (for error messages)."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostlist}").geturl()
