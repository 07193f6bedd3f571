"""The demo pipeline: separate services on one bus, one correlation id per utterance."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.broker import Mosquitto
from tests.test_cli import voicebus
from voicebus.cli.demo import PIPELINE, SCRIPT, Demo, DemoError, Engines, Utterance, run_demo

FAST = Engines(scale=0.05)


def check_utterance(run: Utterance) -> None:
    assert [h.event.type for h in run.hops] == list(PIPELINE)
    assert {h.event.correlation_id for h in run.hops} == {run.correlation_id}
    assert [h.service for h in run.hops] == [
        "wakeword", "stt", "llm", "llm", "tts", "playback", "playback", "tts"
    ]  # fmt: skip
    assert run.hops[0].previous is None and run.hops[0].hop_ms == 0.0
    assert all(h.hop_ms >= 0 and h.bus_ms >= 0 for h in run.hops)
    assert run.total_ms >= sum(h.hop_ms for h in run.hops) - 1
    by_type = {h.event.type.value: h.event for h in run.hops}
    assert by_type["speech_detected"].data["text"] == run.said
    assert by_type["response_generated"].data["response"] == run.answer
    say_id = by_type["tts_started"].data["id"]
    assert by_type["audio_playback_ended"].data["id"] == say_id
    assert by_type["tts_completed"].data["id"] == say_id


@pytest.mark.parametrize("transport", ["memory", "mqtt"])
async def test_pipeline_runs_every_hop(transport: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if transport == "memory" else request.getfixturevalue("mosquitto").url()
    runs = await run_demo(url, utterances=2, engines=FAST)
    assert [r.said for r in runs] == [SCRIPT[0][0], SCRIPT[1][0]]
    assert [r.answer for r in runs] == [SCRIPT[0][1], SCRIPT[1][1]]
    assert runs[0].correlation_id != runs[1].correlation_id
    for run in runs:
        check_utterance(run)
        record = run.as_dict()
        assert [e["type"] for e in record["events"]] == [t.value for t in PIPELINE]


async def test_simulated_latencies_show_in_the_hops() -> None:
    (run,) = await run_demo(engines=Engines(scale=1.0), phrases=["tell me a joke"])
    hops = {h.event.type.value: h.hop_ms for h in run.hops}
    assert hops["speech_detected"] >= 40  # stt_base
    assert hops["response_generated"] >= 50  # per-character LLM time
    assert hops["audio_playback_started"] < 40  # playback starts at once


async def test_two_demos_on_one_broker_do_not_cross_talk(mosquitto: Mosquitto) -> None:
    first, second = await asyncio.gather(
        run_demo(mosquitto.url(), 2, FAST), run_demo(mosquitto.url(), 2, FAST)
    )
    for run in [*first, *second]:
        check_utterance(run)


async def test_a_stalled_pipeline_names_the_missing_hop() -> None:
    demo = Demo(engines=FAST, timeout=0.5)
    demo.services = [s for s in demo.services if s.name != "tts"]
    async with demo:
        with pytest.raises(DemoError, match=r"no tts_started for demo-.* within 0\.5s"):
            await demo.utterance()


def test_voicebus_demo_runs_without_a_broker() -> None:
    result = voicebus("demo", "--scale", "0.2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for event_type in PIPELINE:
        assert event_type.value in out
    assert "wakeword -> stt" in out and "playback -> tts" in out
    assert "total" in out and "from wake word to sayFinished" in out


def test_voicebus_demo_against_mosquitto(mosquitto: Mosquitto) -> None:
    result = voicebus("demo", "--utterances", "2", "--scale", "0.2", "--json", url=mosquitto.url())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["url"] == mosquitto.url()
    assert len(report["utterances"]) == 2
    for utterance in report["utterances"]:
        assert [e["type"] for e in utterance["events"]] == [t.value for t in PIPELINE]
        assert utterance["events"][1]["hop"] == "wakeword -> stt"
    assert {h["hop"] for h in report["hops"]} >= {"wakeword -> stt: speech_detected"}
    text = voicebus("demo", "-n", "2", "--scale", "0.2", url=mosquitto.url())
    assert text.returncode == 0, text.stderr
    assert "latency per hop over 2 utterances" in text.stdout
