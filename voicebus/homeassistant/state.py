"""Per-site state: what a site last heard, said and is doing, as one JSON object.

The bridge keeps it retained on ``voicebus/site/<siteId>/state`` so a Home
Assistant template reads ``value_json.get('transcript')`` without parsing topics:

```json
{"siteId": "kitchen", "wakewordId": "hey_jarvis", "transcript": "turn on the light",
 "response": "Done.", "tts": "idle", "sessionId": "kitchen-1",
 "updated": "2026-11-30T01:02:03.456+00:00"}
```

Which site an event belongs to: its payload's ``siteId`` (restored from the topic
for routes that carry it there). Many services answer without naming the site
(a response's ``siteId`` defaults to ``"default"``): such an event goes to the
site of its correlation id, learnt from the utterance's earlier events.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from ..wire.events import Event, EventType
from ..wire.topics import TopicTemplate

STATE_TOPIC = TopicTemplate("voicebus/site/{siteId}/state")
"""The retained per-site state topic."""
DEFAULT_SITE = "default"
SPEAKING = "speaking"
IDLE = "idle"

TRACKED: tuple[Enum, ...] = (
    EventType.WAKE_WORD_DETECTED,
    EventType.SPEECH_DETECTED,
    EventType.RESPONSE_GENERATED,
    EventType.TTS_STARTED,
    EventType.TTS_COMPLETED,
)
"""The event types that change a site's state."""


def now_iso() -> str:
    """The current time as ISO 8601 in UTC (what Home Assistant parses)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class SiteState:
    """One site's state (the JSON of its state topic, see the module doc)."""

    site_id: str
    wakeword_id: str | None = None
    transcript: str | None = None
    response: str | None = None
    tts: str = IDLE
    session_id: str | None = None
    updated: str | None = None

    @property
    def topic(self) -> str:
        return STATE_TOPIC.format({"siteId": self.site_id})

    def to_json(self) -> dict[str, Any]:
        return {
            "siteId": self.site_id,
            "wakewordId": self.wakeword_id,
            "transcript": self.transcript,
            "response": self.response,
            "tts": self.tts,
            "sessionId": self.session_id,
            "updated": self.updated,
        }

    def payload(self) -> bytes:
        return json.dumps(self.to_json(), ensure_ascii=False).encode()

    @classmethod
    def from_payload(cls, site_id: str, payload: bytes) -> SiteState:
        """A state read back from its retained JSON (unknown or odd values ignored)."""
        try:
            data = json.loads(payload)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        return cls(
            site_id,
            wakeword_id=text("wakewordId"),
            transcript=text("transcript"),
            response=text("response"),
            tts=SPEAKING if data.get("tts") == SPEAKING else IDLE,
            session_id=text("sessionId"),
            updated=text("updated"),
        )


def valid_site(site_id: object) -> bool:
    """`site_id` can name a state topic (one topic level)."""
    if not isinstance(site_id, str):
        return False
    try:
        STATE_TOPIC.format({"siteId": site_id})
    except ValueError:  # TopicError
        return False
    return True


class SiteStates:
    """Every known site's state; `apply` folds in one event."""

    def __init__(self, sessions: int = 1000) -> None:
        self.sites: dict[str, SiteState] = {}
        self._session_sites: OrderedDict[str, str] = OrderedDict()
        self._max_sessions = max(1, sessions)

    def add(self, site_id: str) -> tuple[SiteState, bool]:
        """The state of `site_id`, and whether it is new."""
        state = self.sites.get(site_id)
        if state is not None:
            return state, False
        state = self.sites[site_id] = SiteState(site_id)
        return state, True

    def site_of(self, event: Event) -> str:
        """The site `event` belongs to (see the module doc)."""
        site = event.data.get("siteId")
        cid = event.correlation_id
        if not isinstance(site, str) or site == DEFAULT_SITE:
            known = self._session_sites.get(cid) if cid else None
            return known or DEFAULT_SITE
        if cid:
            self._session_sites[cid] = site
            self._session_sites.move_to_end(cid)
            while len(self._session_sites) > self._max_sessions:
                self._session_sites.popitem(last=False)
        return site

    def apply(self, event: Event) -> SiteState | None:
        """Fold `event` into its site's state; that state, or None when the event
        changes nothing (an unknown type, a site that cannot name a topic)."""
        site = self.site_of(event)
        if event.type not in TRACKED or not valid_site(site):
            return None
        state, _ = self.add(site)
        data = event.data
        kind = event.type
        if kind is EventType.WAKE_WORD_DETECTED:
            wakeword = data.get("wakewordId") or data.get("modelId")
            state.wakeword_id = wakeword if isinstance(wakeword, str) else None
        elif kind is EventType.SPEECH_DETECTED:
            state.transcript = _text(data.get("text"))
        elif kind is EventType.RESPONSE_GENERATED:
            state.response = _text(data.get("response"))
        elif kind is EventType.TTS_STARTED:
            state.tts = SPEAKING
        else:  # TTS_COMPLETED
            state.tts = IDLE
        if event.correlation_id:
            state.session_id = event.correlation_id
        state.updated = now_iso()
        return state


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
