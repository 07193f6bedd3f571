"""Wake-word arbitration (`voicebus.arbiter`): one site answers, the others are cancelled."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import Collector, marker
from voicebus import Event, EventBus, EventType, RequestCancelled
from voicebus.arbiter import Arbiter, likelihood

WAKE = EventType.WAKE_WORD_DETECTED
SPEECH = EventType.SPEECH_DETECTED
SITES = (("hall", 0.6), ("kitchen", 0.9), ("office", 0.7))


async def test_the_most_likely_site_wins_and_the_other_utterances_are_cancelled(
    bus_url: str,
) -> None:
    async with EventBus(bus_url) as judge_bus, EventBus(bus_url) as asr, EventBus(bus_url) as sat:
        arbiter = Arbiter(judge_bus)  # default window 0.3 s
        cancelled: list[str] = []

        async def record(event: Event) -> None:  # listens for 0.5 s, then transcribes
            try:
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                cancelled.append(event.data["siteId"])
                raise
            await asr.emit(SPEECH, {"text": f"heard in {event.data['siteId']}"})

        heard = Collector("heard")
        asr.subscribe(WAKE, record)
        sat.subscribe(SPEECH, heard)
        for bus in (judge_bus, asr, sat):
            await bus.ready()
        began = time.monotonic()
        requests = {
            site: asyncio.ensure_future(
                sat.request(
                    WAKE,
                    {"siteId": site, "likelihood": p},
                    SPEECH,
                    timeout=5,
                    correlation_id=f"utt-{site}",
                )
            )
            for site, p in SITES
        }
        await asyncio.sleep(0)  # the three emits start together
        winner = await requests["kitchen"]
        assert time.monotonic() - began < 3
        for site in ("hall", "office"):
            with pytest.raises(RequestCancelled, match="arbitration_lost"):
                await requests[site]
        await marker(sat, asr, judge_bus)
    assert winner is not None and winner.data["text"] == "heard in kitchen"
    assert [e.data["text"] for e in heard.events] == ["heard in kitchen"]
    (decision,) = arbiter.decisions
    assert decision.winner.data["siteId"] == "kitchen"
    assert sorted(e.data["siteId"] for e in decision.losers) == ["hall", "office"]
    stamps = [e.timestamp for e in [*decision.losers, decision.winner]]
    assert max(stamps) - min(stamps) < 0.1  # three sites within 0.1 s
    assert cancelled == ["hall"]  # running when cancelled; office was still queued
    metrics = asr.get_stats()["metrics"]
    assert metrics["handlers_cancelled"] == 1 and metrics["events_cancelled"] == 1


def test_likelihood_reads_likelihood_then_confidence() -> None:
    def event(**data: object) -> Event:
        return Event(WAKE, dict(data))

    assert likelihood(event(likelihood=0.8, confidence=0.1)) == 0.8
    assert likelihood(event(confidence=0.4)) == 0.4
    assert likelihood(event(likelihood="high")) == 0.0
    assert likelihood(event(likelihood=float("nan"), confidence=0.3)) == 0.3
    assert likelihood(event(likelihood=True)) == 0.0


# `voicebus arbiter` as a service (a subprocess on Mosquitto): tests/test_readme_commands.py
