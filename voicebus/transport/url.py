"""Bus URLs: ``memory://[NAME]`` and ``mqtt[s]://[user:pass@]host[:port][?ca=..&cert=..]``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import VoicebusError

DEFAULT_URL = "memory://"


@dataclass(frozen=True)
class BusURL:
    """A parsed bus URL: ``memory://[NAME]`` or ``mqtt[s]://[user:pass@]host[:port]``."""

    scheme: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = ""
    query: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def redacted(self) -> str:
        """The URL without its password (for logs and errors)."""
        if self.scheme == "memory":
            return f"memory://{self.name}"
        user = f"{self.username}:***@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


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
        if not parts.hostname:
            raise VoicebusError(f"bus URL {url!r} has no host (mqtt://host[:port])")
        try:
            port = parts.port or (8883 if scheme == "mqtts" else 1883)
        except ValueError:
            raise VoicebusError(f"bus URL {url!r} has an invalid port") from None
        return BusURL(
            scheme,
            parts.hostname,
            port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            query=query,
        )
    raise VoicebusError(
        f"unsupported bus URL {url!r}: use memory://, mqtt://host[:port] or mqtts://host[:port]"
    )
