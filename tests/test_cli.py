"""The ``voicebus`` CLI as a user runs it: real subprocesses against a broker the tests start."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.broker import Mosquitto, free_port
from tests.helpers import Collector, eventually
from voicebus import Event, EventBus, EventType
from voicebus.cli.app import app
from voicebus.cli.support import build_payload, routed_event_type
from voicebus.ops.dlq import list_dead_letters
from voicebus.wire.events import event_type_named
from voicebus.wire.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
_TERMINAL_ENV = ("VOICEBUS_URL", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def cli_env(url: str | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: no inherited bus URL, no forced terminal."""
    env = {k: v for k, v in os.environ.items() if k not in _TERMINAL_ENV}
    if url is not None:
        env["VOICEBUS_URL"] = url
    return env


def voicebus(
    *args: str, url: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m voicebus ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "voicebus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(url),
        cwd=ROOT,
    )


class Background:
    """A process whose stdout and stderr the test reads while it runs."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, bufsize=0
        )
        self.buffers = {"stdout": bytearray(), "stderr": bytearray()}

    @classmethod
    def voicebus(cls, *args: str, url: str | None = None) -> Background:
        return cls([sys.executable, "-m", "voicebus", *args], cli_env(url))

    def _pump(self, timeout: float) -> bool:
        streams = {self.proc.stdout: "stdout", self.proc.stderr: "stderr"}
        ready, _, _ = select.select(list(streams), [], [], max(timeout, 0))
        got = False
        for stream in ready:
            assert stream is not None
            data = os.read(stream.fileno(), 65536)
            if data:
                self.buffers[streams[stream]].extend(data)
                got = True
        return got

    def text(self, stream: str = "stdout") -> str:
        return self.buffers[stream].decode("utf-8", "replace")

    def wait_for(self, needle: str, stream: str = "stdout", timeout: float = 10.0) -> str:
        """Read until `needle` appears on `stream`; fail with what was printed."""
        deadline = time.monotonic() + timeout
        while needle not in self.text(stream):
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.2)) and self.proc.poll() is not None):
                if needle in self.text(stream):
                    break
                pytest.fail(
                    f"{needle!r} not seen on {stream} of {self.argv} (exit "
                    f"{self.proc.poll()}):\nstdout: {self.text()}\nstderr: {self.text('stderr')}"
                )
        return self.text(stream)

    def finish(self, sig: int | None = None, timeout: float = 10.0) -> tuple[int, str, str]:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"{self.argv} did not exit: {self.text()} {self.text('stderr')}")
        self.buffers["stdout"].extend(out)
        self.buffers["stderr"].extend(err)
        return self.proc.returncode, self.text(), self.text("stderr")

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def mosquitto_pub(broker: Mosquitto, topic: str, payload: str, *extra: str) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-V",
            "mqttv5",
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-m",
            payload,
            *extra,
        ],
        check=True,
        timeout=10,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voicebus: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- against a real broker -----------------------------------------------------------


def test_publish_is_received_by_mosquitto_sub(mosquitto: Mosquitto) -> None:
    sub = Background(  # stdbuf: mosquitto_sub's stdout is block-buffered in a pipe
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-V",
            "mqttv5",
            "-p",
            str(mosquitto.port),
            "-d",
            "-C",
            "1",
            "-W",
            "10",
            "-t",
            "hermes/asr/textCaptured",
            "-F",
            "%t|%p|%D|%P",
        ]
    )
    with sub:
        sub.wait_for("received SUBACK")
        result = voicebus(
            "publish",
            "speech_detected",
            "text=hello from the cli",
            "confidence=0.9",
            "--correlation-id",
            "cli-1",
            "--source",
            "cli-test",
            url=mosquitto.url(),
        )
        assert result.returncode == 0, result.stderr
        assert "published speech_detected on hermes/asr/textCaptured" in result.stdout
        code, out, _ = sub.finish()
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("hermes/asr/textCaptured|"))
    _, payload, correlation, props = line.split("|", 3)
    assert json.loads(payload)["text"] == "hello from the cli"
    assert json.loads(payload)["likelihood"] == 0.9
    assert correlation == "cli-1"
    assert "type:speech_detected" in props and "source:cli-test" in props


def test_mosquitto_pub_shows_up_in_listen_and_ctrl_c_exits_cleanly(mosquitto: Mosquitto) -> None:
    with Background.voicebus("listen", url=mosquitto.url()) as listen:
        listen.wait_for("listening on", "stderr")
        mosquitto_pub(
            mosquitto,
            "hermes/asr/textCaptured",
            '{"text": "from mosquitto_pub"}',
            "-D",
            "publish",
            "correlation-data",
            "pub-7",
        )
        mosquitto_pub(mosquitto, "hermes/asr/textCaptured", '{"no": "text"}')
        mosquitto_pub(mosquitto, "someone/else/topic", "plain words")
        listen.wait_for("plain words")
        code, out, err = listen.finish(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = out.splitlines()
    good = next(ln for ln in lines if "from mosquitto_pub" in ln)
    assert "speech_detected" in good and "hermes/asr/textCaptured" in good and "pub-7" in good
    bad = next(ln for ln in lines if '"no"' in ln)
    assert "invalid" in bad and "text" in bad
    raw = next(ln for ln in lines if "plain words" in ln)
    assert "someone/else/topic" in raw


def test_listen_into_a_closed_pipe_exits_quietly(mosquitto: Mosquitto) -> None:
    """`voicebus listen | head -1`: when the reader goes away, listen ends with 0."""
    with Background.voicebus("listen", "speech_detected", url=mosquitto.url()) as listen:
        listen.wait_for("listening on", "stderr")
        mosquitto_pub(mosquitto, "hermes/asr/textCaptured", '{"text": "first"}')
        listen.wait_for("first")
        assert listen.proc.stdout is not None
        listen.proc.stdout.close()
        for _ in range(3):  # a write into the closed pipe ends it
            mosquitto_pub(mosquitto, "hermes/asr/textCaptured", '{"text": "more"}')
        code = listen.proc.wait(10)
        assert listen.proc.stderr is not None
        err = listen.proc.stderr.read().decode()
    assert code == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err


async def test_listen_filters_by_pattern_and_correlation_id(mosquitto: Mosquitto) -> None:
    url = mosquitto.url()
    with Background.voicebus(
        "listen",
        "tts_completed",
        "hermes/asr/#",
        "-c",
        "wanted",
        "--json",
        "--count",
        "2",
        url=url,
    ) as listen:
        listen.wait_for("listening on", "stderr")
        async with EventBus(url) as bus:
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "other"}, correlation_id="other")
            await bus.emit(EventType.MODEL_LOADED, {"model": "x"}, correlation_id="wanted")
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "one"}, correlation_id="wanted")
            await bus.emit(EventType.TTS_COMPLETED, {"id": "two"}, correlation_id="wanted")
        code, out, err = listen.finish()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in records] == ["speech_detected", "tts_completed"]
    assert {r["correlation_id"] for r in records} == {"wanted"}
    assert records[0]["data"]["text"] == "one"


def test_wait_exits_0_with_the_event_as_json(mosquitto: Mosquitto) -> None:
    with Background.voicebus(
        "wait",
        "tts_completed",
        "--correlation-id",
        "utt-42",
        "--timeout",
        "10",
        url=mosquitto.url(),
    ) as waiting:
        waiting.wait_for("waiting for", "stderr")
        mosquitto_pub(
            mosquitto,
            "hermes/tts/sayFinished",
            '{"id": "other"}',
            "-D",
            "publish",
            "correlation-data",
            "utt-1",
        )
        mosquitto_pub(
            mosquitto,
            "hermes/tts/sayFinished",
            '{"id": "say-1", "siteId": "kitchen"}',
            "-D",
            "publish",
            "correlation-data",
            "utt-42",
        )
        code, out, err = waiting.finish()
    assert code == 0, err
    event = json.loads(out)
    assert event["type"] == "tts_completed"
    assert event["correlation_id"] == "utt-42"
    assert event["data"] == {"id": "say-1", "siteId": "kitchen"}


def test_wait_exits_1_on_timeout(mosquitto: Mosquitto) -> None:
    result = voicebus("wait", "tts_completed", "--timeout", "0.3", url=mosquitto.url())
    assert_one_line_error_after_ready(result, 1, "no tts_completed event within 0.3s")
    assert result.stdout == ""


def assert_one_line_error_after_ready(
    result: subprocess.CompletedProcess[str], code: int, needle: str
) -> None:
    """`wait` prints a 'waiting for' line first; the error is the last, single line."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("voicebus: error: ") and needle in last, result.stderr


def test_status_lists_services_from_the_status_topics(mosquitto: Mosquitto) -> None:
    client = f"status-test-{os.getpid()}"
    mosquitto_pub(mosquitto, f"voicebus/status/{client}-b", "offline", "-r")
    try:
        mosquitto_pub(mosquitto, f"voicebus/status/{client}-a", "online", "-r")
        result = voicebus("status", "--json", url=mosquitto.url())
        assert result.returncode == 0, result.stderr
        entries = {e["client_id"]: e["status"] for e in json.loads(result.stdout)}
        assert entries[f"{client}-a"] == "online"
        assert entries[f"{client}-b"] == "offline"
        text = voicebus("status", url=mosquitto.url())
        assert text.returncode == 0
        row = next(ln for ln in text.stdout.splitlines() if f"{client}-a" in ln)
        assert "online" in row
    finally:
        for suffix in ("a", "b"):
            mosquitto_pub(mosquitto, f"voicebus/status/{client}-{suffix}", "", "-r")


def test_cli_commands_leave_no_retained_status(mosquitto: Mosquitto) -> None:
    """A one-shot command is no service: nothing of it stays in `voicebus status`."""
    before = voicebus("status", "--json", url=mosquitto.url())
    published = voicebus("publish", "health_check", url=mosquitto.url())
    after = voicebus("status", "--json", url=mosquitto.url())
    for result in (before, published, after):
        assert result.returncode == 0, result.stderr
    clients = {e["client_id"] for e in json.loads(after.stdout)}
    assert not {c for c in clients if c.startswith("voicebus-cli-")} - {
        e["client_id"] for e in json.loads(before.stdout)
    }


# --- errors: one line, an exit code, no traceback -------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["publish", "speech_detected", "--data", "{bad json"], ["--data is not valid JSON"]),
        (["publish", "speech_detected", "--data", "[1, 2]"], ["must be a JSON object"]),
        (
            ["publish", "speech_detected", "--data", '{"likelihood": 0.5}'],
            ["invalid speech_detected payload", "text"],
        ),
        (
            ["publish", "speech_detected", "likelihood=high", "text=x"],
            ["invalid speech_detected payload", "likelihood"],
        ),
        (
            ["publish", "speach_detected"],
            ["unknown event type 'speach_detected'", "did you mean speech_detected"],
        ),
        (["wait", "tts_complete"], ["did you mean tts_completed"]),
        (["publish", "speech_detected", "novalue"], ["expected key=value"]),
        (["listen", "hermes/#/x"], ["'#' must be a whole last level"]),
        (["publish", "health_check", "--url", "redis://x"], ["unsupported bus URL"]),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "invalid-payload",
        "invalid-field",
        "unknown-type",
        "unknown-wait-type",
        "bad-pair",
        "bad-filter",
        "bad-url",
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(voicebus(*args), 2, *needles)


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "speech_detected", "text=hi"],
        ["listen"],
        ["wait", "tts_completed", "--timeout", "1"],
        ["status"],
        ["dlq", "list"],
    ],
    ids=lambda a: a[0] if a[0] != "dlq" else "dlq-list",
)
def test_unreachable_broker_is_one_line_with_a_hint_and_exit_3(args: list[str]) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    result = voicebus(*args, url=url)
    port = url.rsplit(":", 1)[1]
    assert_one_line_error(result, 3, f"cannot connect to {url}", f"mosquitto -p {port}")


def test_demo_against_an_unreachable_broker_exits_3() -> None:
    result = voicebus("demo", "--json", url=f"mqtt://127.0.0.1:{free_port()}")
    assert_one_line_error(result, 3, "cannot connect to", "is Mosquitto running?")


# --- in-process: parsing and output ---------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in _TERMINAL_ENV:
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("voicebus ")


def test_topics_lists_every_route(runner: CliRunner) -> None:
    text = runner.invoke(app, ["topics"])
    assert text.exit_code == 0
    for route in ROUTES:
        assert route.event_type.value in text.output
        assert route.template.template in text.output
    assert "AsrTextCaptured" in text.output
    rows = json.loads(runner.invoke(app, ["topics", "--json"]).output)
    speech = next(r for r in rows if r["event_type"] == "speech_detected")
    assert speech["topic"] == "hermes/asr/textCaptured"
    assert speech["hermes"] == "AsrTextCaptured"
    assert "text" in speech["fields"]


def test_publish_on_memory_validates_and_prints_the_event(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["publish", "SPEECH_DETECTED", "text=42", "seconds:=1.5", "--json", "-c", "m-1"]
    )
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout)
    assert event["type"] == "speech_detected"
    assert event["data"]["text"] == "42"  # a string field keeps the string
    assert event["data"]["seconds"] == 1.5
    assert event["correlation_id"] == "m-1"
    assert "memory:// is this process only" in result.stderr


def test_key_value_pairs() -> None:
    route = ROUTES.get(routed_event_type("speech_detected"))
    payload = build_payload(
        route,
        '{"text": "base", "siteId": "a"}',
        ["siteId=kitchen", "confidence=0.9", "flag=true", "tags:=[1, 2]", "note=[x"],
    )
    assert payload == {
        "text": "base",
        "siteId": "kitchen",
        "confidence": 0.9,
        "flag": True,
        "tags": [1, 2],
        "note": "[x",
    }


def test_event_type_names_are_forgiving() -> None:
    for named in (routed_event_type, event_type_named):  # the CLI's and the bus's: one rule
        assert named("Speech-Detected") is EventType.SPEECH_DETECTED
        assert named("TTS_COMPLETED") is EventType.TTS_COMPLETED


def test_dlq_usage_errors(runner: CliRunner) -> None:
    both = runner.invoke(app, ["dlq", "purge", "1", "--all"])
    assert both.exit_code == 2 and "ID or --all" in both.stderr
    neither = runner.invoke(app, ["dlq", "purge"])
    assert neither.exit_code == 2 and "ID or --all" in neither.stderr


async def test_dlq_list_replay_purge_on_the_broker(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    got = Collector()
    async with EventBus(url, client_id="dlq-test-service") as service:

        def broken(event: Event) -> None:
            raise ValueError("engine exploded")

        service.subscribe(EventType.TTS_COMPLETED, broken)
        service.subscribe(EventType.SPEECH_DETECTED, got)
        await service.emit(EventType.TTS_COMPLETED, {"id": "say-9"}, correlation_id="c-9")
        mosquitto_pub(fresh_mosquitto, "hermes/asr/textCaptured", '{"nope": 1}')

        async def retained(count: int) -> bool:
            records = await list_dead_letters(service, client_id=service.client_id)
            return len(records) >= count

        await eventually(lambda: retained(2))  # both records on the broker

        listed = await run_cli("dlq", "list", "--json", url=url)
        assert listed.returncode == 0, listed.stderr
        records = {r["reason"]: r for r in json.loads(listed.stdout)}
        assert set(records) == {"handler_error", "validation"}
        failed = records["handler_error"]
        assert failed["error"] == "engine exploded" and failed["topic"] == "hermes/tts/sayFinished"
        text = await run_cli("dlq", "list", url=url)
        assert failed["id"] in text.stdout and "engine exploded" in text.stdout

        invalid = records["validation"]["id"]
        replayed = await run_cli("dlq", "replay", invalid, url=url)
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {invalid}" in replayed.stdout
        # replayed as it arrived: still invalid, so it becomes a new dead letter
        again = await run_cli("dlq", "replay", invalid, url=url)
        assert_one_line_error(again, 2, f"no dead letter {invalid!r}")

        purged = await run_cli("dlq", "purge", failed["id"], url=url)
        assert purged.returncode == 0 and "purged 1 dead letter(s)" in purged.stdout
        missing = await run_cli("dlq", "purge", failed["id"], url=url)
        assert_one_line_error(missing, 2, "no dead letter")
        await eventually(lambda: retained(1))  # the dead letter of the replayed message
        everything = await run_cli("dlq", "purge", "--all", "--json", url=url)
        assert json.loads(everything.stdout)["purged"] >= 1
        empty = await run_cli("dlq", "list", "--json", url=url)
        assert json.loads(empty.stdout) == []


async def run_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """`voicebus` in a subprocess without blocking the test's event loop (its bus runs)."""
    return await asyncio.to_thread(voicebus, *args, url=url)


def test_no_command_prints_the_broker_password(mosquitto: Mosquitto) -> None:
    url = mosquitto.url(userinfo="demo:s3cret-pw")
    runs = [
        voicebus("demo", "--scale", "0", url=url),
        voicebus("demo", "--scale", "0", "--json", url=url),
        voicebus("status", "--timeout", "2", url=url),
    ]
    for result in runs:
        assert result.returncode == 0, result.stderr
        assert "s3cret-pw" not in result.stdout + result.stderr
    assert "demo:***@" in runs[0].stdout


# A broker that never answers (no CONNACK): tests/test_cli_errors.py, which checks
# status, dlq list, wait and trace for exit 3, one error line and --timeout 1 < 2 s.


def test_dlq_list_skips_malformed_records(mosquitto: Mosquitto) -> None:
    topic = f"voicebus/deadLetter/bad-{time.monotonic_ns()}"
    mosquitto_pub(mosquitto, topic, '{"time": "yesterday", "topic": "x"}', "-r")
    try:
        result = voicebus("dlq", "list", "--json", url=mosquitto.url())
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert topic.rsplit("/", 1)[1] not in result.stdout
    finally:
        mosquitto_pub(mosquitto, topic, "", "-r")
