"""Trace, record and replay: the file format, the waterfall, and the CLI on real brokers."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.broker import Mosquitto
from tests.helpers import eventually
from tests.test_cli import Background, voicebus
from voicebus import EventBus, EventType, Message, RecordingError
from voicebus.cli.app import app
from voicebus.cli.demo import PIPELINE, Demo, DemoError, Engines, run_demo
from voicebus.ops.recording import RecordedMessage, record_message, replay_message
from voicebus.ops.trace import traces
from voicebus.testing import Recording, load_recording, record, replay

FAST = Engines(scale=0.05)
DEMO_HOPS = [
    ("wakeword", "wake_word_detected"),
    ("wakeword -> stt", "speech_detected"),
    ("stt -> llm", "response_generating"),
    ("llm -> llm", "response_generated"),
    ("llm -> tts", "tts_started"),
    ("tts -> playback", "audio_playback_started"),
    ("playback -> playback", "audio_playback_ended"),
    ("playback -> tts", "tts_completed"),
]
"""A demo utterance linked by "previous event" (a bus that sends no parent ids)."""
DEMO_HOPS_BY_PARENT = [
    ("wakeword", "wake_word_detected"),
    ("wakeword -> stt", "speech_detected"),
    ("stt -> llm", "response_generating"),
    ("stt -> llm", "response_generated"),
    ("llm -> tts", "tts_started"),
    ("tts -> playback", "audio_playback_started"),
    ("tts -> playback", "audio_playback_ended"),
    ("playback -> tts", "tts_completed"),
]
"""The same linked by `Event.parent_id` (each event's cause)."""


def expected_hops(linked_by: list[str | None]) -> list[tuple[str, str]]:
    """The demo's hops for a trace whose rows were linked as `linked_by` says."""
    return DEMO_HOPS_BY_PARENT if "parent_id" in linked_by else DEMO_HOPS


BINARY = [b"\xff\xfe\x00\x01 not utf-8", bytes(range(256)), b'{"a": 1,  "b":[1.50]}', b""]


def demo_hops(run_id: str, hops: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`hops` with the demo's client ids (demo-<service>-<run id>) shortened."""
    short = [(h.replace("demo-", "").replace(f"-{run_id}", ""), t) for h, t in hops]
    return short


def msg(topic: str, id: str, t: float, parent: str | None = None, **extra: object) -> Message:
    props = [("id", id), ("type", str(extra.pop("type", "x"))), ("time", repr(t))]
    props.append(("source", str(extra.pop("source", "svc"))))
    if parent:
        props.append(("parent", parent))
    payload = extra.pop("payload", b"{}")
    assert isinstance(payload, bytes)
    return Message(topic, payload, 1, False, b"u1", tuple(props), "application/json")


# --- the file format and the waterfall (no broker) -------------------------------------


def test_a_recorded_line_gives_back_every_byte_and_property() -> None:
    props = (
        ("id", "e1"),
        ("time", "nan"),  # no sane time: kept as it came
        ("metadata", "[1]"),  # no object: kept as it came
        ("x-node-red", "yes"),
        ("id", "again"),  # a repeated key stays in user_properties
        ("parent", "e0"),
    )
    for payload in [*BINARY, b'{"text":"hi","n":1}', "héllo".encode()]:
        message = Message("a/b", payload, 0, False, b"\xff\x00", props, None)
        recorded = record_message(message, 1000.5)
        doc = json.loads(recorded.line())
        back = RecordedMessage.from_json(doc)
        assert back == recorded and back.payload == payload
        assert back.correlation_id == "b64:/wA=" and back.parent_id == "e0"
        assert back.user_properties == (
            ("time", "nan"), ("metadata", "[1]"), ("x-node-red", "yes"), ("id", "again")
        )  # fmt: skip
    assert "payload" in json.loads(record_message(Message("t", b'{"a":1}')).line())
    assert "payload_text" in json.loads(record_message(Message("t", b'{"a": 1}')).line())
    assert "payload_base64" in json.loads(record_message(Message("t", b"\xff")).line())


def test_a_replayed_message_has_a_new_id_and_names_the_original() -> None:
    original = record_message(msg("a/b", "e2", 10.0, parent="e1", payload=b"\x00\xff"), 10.1)
    original.metadata = {"k": "v"}
    original.user_properties = (("metadata", "[]"), ("x", "y"))
    replayed = replay_message(original, "new2", {"e1": "new1"})
    props = dict(replayed.user_properties)
    assert len(props) == len(replayed.user_properties)  # no key twice
    assert props["id"] == "new2" and props["parent"] == "new1" and props["x"] == "y"
    assert json.loads(props["metadata"]) == {"k": "v", "replayed_from": "e2"}
    assert float(props["time"]) > 10.0 and props["source"] == "svc"
    assert (replayed.payload, replayed.correlation_data, replayed.qos) == (b"\x00\xff", b"u1", 1)


def test_a_file_that_is_no_recording_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = record_message(msg("a", "e1", 1.0), 1.0).line()
    path.write_text(f'{good}\n\n{{"topic": "a"}}\n')
    with pytest.raises(RecordingError, match=r"line 3 of .* \(needs exactly one of payload"):
        load_recording(path)
    with pytest.raises(RecordingError, match="cannot read recording"):
        load_recording(tmp_path / "missing.jsonl")


def test_the_waterfall_follows_parent_ids_and_shows_failures() -> None:
    dead = {
        "id": "dl1", "reason": "handler_error", "error": "boom", "handler": "on_text",
        "client_id": "tts", "time": 1.35,
        "envelope": {"id": "c", "type": "response_generated", "correlation_id": "u1"},
    }  # fmt: skip
    messages = [
        msg("t/c", "c", 1.3, parent="a", type="response_generated", source="llm"),
        msg("t/a", "a", 1.0, type="wake", source="mic"),
        msg("t/b", "b", 1.1, parent="a", type="speech", source="stt"),
        msg("t/d", "d", 1.4, type="note", source="x"),  # no parent: the previous message
        Message("voicebus/deadLetter/dl1", json.dumps(dead).encode(), retain=True),
        msg("voicebus/error/tts", "e", 1.36, type="error_occurred", source="tts",
            payload=b'{"error":"boom","context":"response_generated"}'),
        msg("voicebus/cancelled", "f", 1.5, type="cancelled", source="arbiter",
            payload=b'{"reason":"barge_in"}'),
        Message("hermes/asr/textCaptured", b'{"text":"hi","sessionId":"u1"}'),  # Rhasspy
        msg("t/z", "z", 1.2, source="other"),
    ]  # fmt: skip
    other = messages.pop()
    recorded = [record_message(m, 2.0) for m in [*messages, other]]
    recorded[-1].correlation_id = "u2"
    (one,) = traces(recorded, "u1")
    assert [(r.hop, r.type, r.kind) for r in one.rows] == [
        ("mic", "wake", "event"),
        ("mic -> stt", "speech", "event"),
        ("mic -> llm", "response_generated", "event"),
        ("llm -> tts", "response_generated", "dead_letter"),
        ("tts -> tts", "error_occurred", "error"),
        ("tts -> x", "note", "event"),
        ("x -> arbiter", "cancelled", "cancelled"),
        ("arbiter -> ?", "speech_detected", "event"),  # no envelope: its topic's type,
    ]
    # its receive time, its sessionId as correlation id
    assert [r.linked_by for r in one.rows] == [
        None, "parent_id", "parent_id", "parent_id", "previous", "previous", "previous",
        "previous",
    ]  # fmt: skip
    latencies = [r.latency_ms for r in one.rows]
    assert latencies[0] is None
    assert latencies[1:] == pytest.approx([100, 300, 50, 10, 40, 100, 500])
    assert one.rows[3].detail == "handler_error: boom (handler on_text)"
    assert one.rows[4].detail == "response_generated: boom"
    assert one.rows[6].detail == "barge_in"
    doc = one.to_dict()
    assert (doc["dead_letters"], doc["errors"], doc["cancellations"]) == (1, 1, 1)
    assert doc["total_ms"] == pytest.approx(1000)
    assert [t.correlation_id for t in traces(recorded)] == ["u1", "u2"]


# --- on real brokers, through the CLI ---------------------------------------------------


def test_trace_of_a_demo_run_prints_its_hops_with_latencies(mosquitto: Mosquitto) -> None:
    url = mosquitto.url()
    run_id = uuid.uuid4().hex[:6]
    cid = f"demo-{run_id}-1"
    args = ("trace", cid, "--quiet", "0.5", "--timeout", "20", "--url", url)
    with (
        Background.voicebus(*args) as text,
        Background.voicebus("trace", "--follow", "--json", "--quiet", "0.5", "--url", url) as data,
    ):
        text.wait_for("tracing correlation id", "stderr")
        data.wait_for("tracing every utterance", "stderr")
        demo = voicebus("demo", "-n", "2", "--run-id", run_id, "--scale", "0.05", "--url", url)
        assert demo.returncode == 0, demo.stderr
        code, out, err = text.finish()
        assert code == 0, err
        data.wait_for(f'"correlation_id": "demo-{run_id}-2"')
        code, raw, err = data.finish(signal.SIGINT)
        assert code == 0, err
    followed = [json.loads(line) for line in raw.splitlines()]
    assert [t["correlation_id"] for t in followed] == [cid, f"demo-{run_id}-2"]
    assert out.startswith(f"trace {cid}: 8 message(s)")
    trace = followed[0]
    events = trace["events"]
    assert trace["correlation_id"] == cid
    hops = [(e["hop"], e["type"]) for e in events]
    assert demo_hops(run_id, hops) == expected_hops([e["linked_by"] for e in events])
    lines = out.splitlines()[2:10]  # after the title and the column names
    assert [line.split()[-2] for line in lines] == [t.value for t in PIPELINE]
    assert _hops_of(lines) == hops
    assert all(line.count(" ms") == 2 for line in lines[1:])  # offset and latency
    assert events[0]["latency_ms"] is None
    assert all(e["latency_ms"] >= 0 for e in events[1:])
    offsets = [e["offset_ms"] for e in events]
    assert offsets == sorted(offsets) and trace["total_ms"] == offsets[-1] > 0
    at = {e["id"]: e["offset_ms"] for e in events}
    for e in events[1:]:  # the latency since its parent (by parent_id, or the previous one)
        assert e["latency_ms"] == pytest.approx(e["offset_ms"] - at[e["parent_id"]], abs=0.01)
    shown = [line.split("ms")[1].split()[-1] for line in lines[1:]]  # the latency column
    # text and JSON agree (JSON keeps 2 decimals, text 1: 0.75 may print as 0.7 or 0.8)
    for text_ms, e in zip(shown, events[1:], strict=True):
        assert abs(float(text_ms) - e["latency_ms"]) <= 0.05 + 1e-6, (text_ms, e)


def _hops_of(lines: list[str]) -> list[tuple[str, str]]:
    """(hop, event) of waterfall text lines: `<at> ms <hop> [<latency> ms] <event> <topic>`."""
    rows = []
    for line in lines:
        words = line.split()[2:-2]  # drop the offset and its unit, the event and topic
        if words[-1] == "ms":
            words = words[:-2]
        rows.append((" ".join(words), line.split()[-2]))
    return rows


async def test_a_replayed_demo_has_the_same_hops_on_fresh_services(
    fresh_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Record 3 utterances on one broker; replay what started each (``--roots``) to
    fresh demo services on a second broker: every utterance has the same hops."""
    first, second = fresh_mosquitto, Mosquitto(tmp_path / "second")
    second.start()
    run_id = uuid.uuid4().hex[:6]
    first_file, second_file = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    only_file = tmp_path / "only.jsonl"
    try:
        only = f"demo-{run_id}-2"
        with (
            Background.voicebus("record", str(first_file), "-n", "24", "--url", first.url()) as one,
            Background.voicebus(
                "record", str(second_file), "-n", "24", "--url", second.url()
            ) as two,
            Background.voicebus(
                "record", str(only_file), "speech_detected", "tts_completed",
                "--correlation-id", only, "--url", first.url(),
            ) as three,
        ):  # fmt: skip
            for recorder in (one, two, three):
                await asyncio.to_thread(recorder.wait_for, "recording ", "stderr")
            runs = await run_demo(first.url(), 3, FAST, run_id=run_id)
            code, _, err = await asyncio.to_thread(one.finish)
            assert code == 0, err
            code, _, err = await asyncio.to_thread(three.finish, signal.SIGINT)
            assert code == 0 and "recorded 2 message(s)" in err, err
            async with Demo(second.url(), FAST, run_id=run_id) as fresh:
                replayed = await asyncio.to_thread(
                    voicebus, "replay", str(first_file), "--roots", "--speed", "4",
                    "--json", "--url", second.url(),
                )  # fmt: skip
                assert replayed.returncode == 0, replayed.stderr
                code, _, err = await asyncio.to_thread(two.finish)
                assert code == 0, err
                assert len(fresh.observer.seen) == 3  # the fresh services ran each one
    finally:
        second.stop()
    original, again = load_recording(first_file), load_recording(second_file)
    assert original.correlation_ids() == [r.correlation_id for r in runs]
    assert len(original) == len(again) == 24
    assert json.loads(replayed.stdout)["replayed"] == 3
    picked = load_recording(only_file)
    assert [(m.type, m.correlation_id) for m in picked] == [
        ("speech_detected", only), ("tts_completed", only)
    ]  # fmt: skip
    for before, after in zip(traces(original), traces(again), strict=True):
        assert before.correlation_id == after.correlation_id
        linked = [row.linked_by for row in after.rows]
        assert demo_hops(run_id, after.hops()) == expected_hops(linked)
        assert after.hops() == before.hops()
        root = after.rows[0].message
        assert root.metadata == {"replayed_from": before.rows[0].id}
        assert root.id != before.rows[0].id


async def test_binary_payloads_round_trip_byte_identical(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    second = Mosquitto(tmp_path / "second")
    second.start()
    try:
        topics = [f"test/bin/{i}" for i in range(len(BINARY))]
        async with record(mosquitto.url(), "test/bin/#") as first, EventBus(mosquitto.url()) as bus:
            for topic, payload in zip(topics, BINARY, strict=True):
                await bus.publish_message(Message(topic, payload, 1, False, b"\x80bin"))
            await eventually(lambda: len(first) == len(BINARY))
        path = tmp_path / "bin.jsonl"
        first.save(path)
        loaded = load_recording(path)
        assert [m.payload for m in loaded] == BINARY
        async with record(second.url(), "test/bin/#") as again, EventBus(second.url()) as bus:
            assert await replay(bus, loaded, speed=0) == {}  # no envelope ids: none renamed
            await eventually(lambda: len(again) == len(BINARY))
        assert [(m.topic, m.payload) for m in again] == list(zip(topics, BINARY, strict=True))
        assert {m.correlation_id for m in again} == {"b64:gGJpbg=="}
    finally:
        second.stop()


async def test_a_recorded_memory_demo_replays_as_a_regression_test() -> None:
    """The voicebus.testing pattern on memory://: record, replay the roots into fresh
    services, compare the traces."""
    run_id = uuid.uuid4().hex[:6]
    url, fresh_url = f"memory://rec-{run_id}", f"memory://fresh-{run_id}"
    async with record(url) as before:
        await run_demo(url, 2, FAST, run_id=run_id)
    async with Demo(fresh_url, FAST, run_id=run_id), record(fresh_url) as after:
        async with EventBus(fresh_url) as bus:
            renamed = await replay(bus, Recording(before).roots(), speed=0)
        assert len(renamed) == 2
        await eventually(lambda: len(after) == len(before))
    assert [t.hops() for t in traces(after)] == [t.hops() for t in traces(before)]
    assert len(traces(before)) == 2


def test_trace_and_demo_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["trace"])
    assert result.exit_code == 2 and "give a CORRELATION_ID, --follow, or --from FILE" in (
        result.stderr
    )
    path = tmp_path / "r.jsonl"
    Recording([record_message(msg("a", "e1", 1.0), 1.0)]).save(path)
    result = runner.invoke(app, ["trace", "nope", "--from", str(path)])
    assert result.exit_code == 2 and f"no message with correlation id nope in {path}" in (
        result.stderr
    )
    result = runner.invoke(app, ["trace", "--from", str(path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["correlation_id"] == "u1"
    with pytest.raises(DemoError, match="run id 'a/b'"):
        Demo(run_id="a/b")


async def test_a_failing_handler_shows_in_the_trace(mosquitto: Mosquitto) -> None:
    """A real dead letter and ERROR_OCCURRED, recorded off the broker, join the
    utterance's trace."""
    cid = f"fail-{uuid.uuid4().hex[:6]}"

    def broken(event: object) -> None:
        raise ValueError("no engine")

    async with (
        record(mosquitto.url()) as recorded,
        EventBus(mosquitto.url(), client_id=f"stt-{cid}") as stt,
        EventBus(mosquitto.url(), client_id=f"mic-{cid}") as mic,
    ):
        stt.subscribe(EventType.WAKE_WORD_DETECTED, broken)
        await stt.ready()
        await mic.emit(
            EventType.WAKE_WORD_DETECTED, {"wakewordId": "hey", "siteId": "k"}, correlation_id=cid
        )

        def kinds() -> list[str]:
            (one,) = traces(recorded, cid)
            return sorted(row.kind for row in one.rows)

        await eventually(lambda: kinds() == ["dead_letter", "error", "event"])
    (one,) = traces(recorded, cid)
    rows = {row.kind: row for row in one.rows}
    assert rows["event"].hop == f"mic-{cid}" and rows["event"].type == "wake_word_detected"
    assert rows["dead_letter"].parent is rows["event"]  # the event that failed
    assert rows["dead_letter"].hop == f"mic-{cid} -> stt-{cid}"
    assert rows["dead_letter"].detail.startswith("handler_error: no engine (handler test_")
    assert rows["error"].source == f"stt-{cid}" and "no engine" in rows["error"].detail
    assert one.to_dict()["dead_letters"] == one.to_dict()["errors"] == 1
