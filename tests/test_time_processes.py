"""Causality and cancellation between processes over a real Mosquitto.

The services are tests/time_peers.py, one process each; this test process plays
service A (causality) and the canceller (cancellation).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.broker import Mosquitto
from tests.test_cli import Background, cli_env
from voicebus import EventBus, EventType


def _peer(role: str, url: str, *args: str) -> Background:
    return Background([sys.executable, "-m", "tests.time_peers", role, url, *args], cli_env(url))


def _lines(peer: Background) -> list[dict[str, Any]]:
    return [json.loads(line) for line in peer.text().splitlines() if line.startswith("{")]


@contextmanager
def _peers(url: str, *roles: str) -> Iterator[dict[str, Background]]:
    started = {role: _peer(role, url) for role in roles}
    try:
        for peer in started.values():
            peer.wait_for('"ready"', timeout=20)
        yield started
    finally:
        for peer in started.values():
            with peer:
                pass


def _stats(peer: Background) -> dict[str, Any]:
    """Stop `peer` (SIGTERM) and return its last line: stats and dead letters."""
    code, _, err = peer.finish(signal.SIGTERM)
    assert code == 0, err
    (last,) = [line for line in _lines(peer) if "stats" in line]
    return last


async def test_a_reply_made_in_another_process_carries_the_utterance_and_its_parent(
    mosquitto: Mosquitto,
) -> None:
    url = mosquitto.url()
    with _peers(url, "relay", "observe") as peers:
        async with EventBus(url) as a:
            speech = await a.emit(
                EventType.SPEECH_DETECTED, {"text": "hi"}, correlation_id="utt-x"
            )
            await asyncio.to_thread(peers["observe"].wait_for, '"seen"', "stdout", 20)
        (seen,) = [line for line in _lines(peers["observe"]) if "seen" in line]
        for peer in peers.values():
            _stats(peer)
    assert seen == {
        "seen": "response_generated",
        "correlation_id": "utt-x",
        "parent_id": speech.id,
    }


async def test_cancel_from_another_process_ends_the_utterance_in_every_service(
    mosquitto: Mosquitto,
) -> None:
    url = mosquitto.url()
    with _peers(url, "stt", "llm", "tts") as peers:
        requester = _peer("requester", url, "utt-c")
        with requester:
            await asyncio.to_thread(requester.wait_for, '"ready"', "stdout", 20)
            await asyncio.to_thread(peers["llm"].wait_for, '"started"', "stdout", 20)
            async with EventBus(url) as canceller:
                await canceller.cancel("utt-c", reason="barge_in")
                await asyncio.to_thread(requester.wait_for, "request_cancelled", "stdout", 20)
                await asyncio.to_thread(peers["llm"].wait_for, '"cancelled"', "stdout", 20)
                # a late reply for the cancelled utterance, then one for another:
                # tts drops the first (within cancel_window) and handles the second
                await canceller.emit(
                    EventType.RESPONSE_GENERATED, {"response": "late"}, correlation_id="utt-c"
                )
                await canceller.emit(
                    EventType.RESPONSE_GENERATED, {"response": "ok"}, correlation_id="utt-d"
                )
                await asyncio.to_thread(peers["tts"].wait_for, "utt-d", "stdout", 20)
            requester_stats = _stats(requester)
        stats = {role: _stats(peer) for role, peer in peers.items()}
        llm_lines = _lines(peers["llm"])
        tts_seen = [line["correlation_id"] for line in _lines(peers["tts"]) if "seen" in line]
    assert {"request_cancelled": "utt-c", "reason": "barge_in"} in _lines(requester)
    assert {"started": "utt-c"} in llm_lines and {"cancelled": "utt-c"} in llm_lines
    assert tts_seen == ["utt-d"]  # never an event of the cancelled utterance
    assert requester_stats["stats"]["waits_cancelled"] == 1
    assert stats["llm"]["stats"]["handlers_cancelled"] == 1
    assert stats["llm"]["dead_letters"] == 0  # cancelled, not failed
    assert stats["tts"]["stats"]["events_cancelled"] == 1
    for role, line in [*stats.items(), ("requester", requester_stats)]:
        assert line["stats"]["cancellations_received"] == 1, role
        assert line["dead_letters"] == 0, role
