"""The CLI's connection errors, each with a message naming the cause and its exit code
(3 unreachable, 4 credentials refused, 5 ACL denied), against real brokers on loopback:
mosquitto/mosquitto.conf and mosquitto/secure.conf (users, ACL, TLS)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aiomqtt
import pytest

from tests.broker import Mosquitto, free_port
from tests.test_cli import ROOT, assert_one_line_error, cli_env, voicebus
from tests.test_security import PASSWORDS, Secure, make_secure_files
from voicebus.cli import output
from voicebus.errors import BrokerUnavailableError, TLSError
from voicebus.transport.mqtt.errors import connect_error
from voicebus.wire.routes import ROUTES


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("cli-secure")
    make_secure_files(root / "broker", root / "other-ca")
    with Mosquitto(root / "broker", "secure.conf") as broker:
        certs = root / "broker" / "certs"
        yield Secure(broker, certs / "ca.crt", root / "other-ca" / "ca.crt", certs)


def tls_url(secure: Secure, user: str = "stt", password: str | None = None) -> str:
    password = PASSWORDS[user] if password is None else password
    port = secure.broker.ports[8883]
    return f"mqtts://{user}:{password}@127.0.0.1:{port}?ca={secure.ca}"


def test_the_exit_codes_are_the_documented_ones() -> None:
    codes = {
        name: value for name, value in vars(output).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }  # fmt: skip
    assert codes == {
        "EXIT_OK": 0, "EXIT_TIMEOUT": 1, "EXIT_INPUT": 2, "EXIT_BROKER": 3,
        "EXIT_AUTH": 4, "EXIT_DENIED": 5, "EXIT_INTERRUPTED": 130,
    }  # fmt: skip
    readme = " ".join((ROOT / "README.md").read_text().split())
    for code in ("1 no event in time", "2 bad input", "3 broker unreachable",
                 "4 credentials refused", "5 not authorized", "130 interrupted"):  # fmt: skip
        assert code in readme, code


def test_refused_names_the_port_and_a_mosquitto_command_that_works_anywhere() -> None:
    port = free_port()
    result = voicebus("status", url=f"mqtt://127.0.0.1:{port}")
    assert_one_line_error(
        result, 3, f"nothing listens on port {port}", f"start one with: mosquitto -p {port}"
    )
    assert "mosquitto/mosquitto.conf" not in result.stderr  # no path of the source tree


def test_a_host_name_that_does_not_resolve_says_so() -> None:
    # glibc refuses a name with a leading hyphen without asking a DNS server (the
    # test stays on this machine); a typo that reaches DNS fails the same (EAI_NONAME)
    result = voicebus("publish", "health_check", url="mqtt://-no-such-broker:1883")
    assert_one_line_error(result, 3, "host name '-no-such-broker' does not resolve")
    assert "Mosquitto" not in result.stderr


def test_plain_mqtt_to_a_tls_port_suggests_mqtts(secure: Secure) -> None:
    port = secure.broker.ports[8883]
    result = voicebus("status", url=f"mqtt://127.0.0.1:{port}")
    assert_one_line_error(result, 3, "closed the connection before answering", "use mqtts://")
    assert "Mosquitto running" not in result.stderr


def test_tls_to_a_plain_port_suggests_mqtt(secure: Secure, mosquitto: Mosquitto) -> None:
    result = voicebus("status", url=f"mqtts://127.0.0.1:{mosquitto.port}?ca={secure.ca}")
    assert_one_line_error(result, 3, "TLS with", "closed the connection in the handshake",
                          "use mqtt://")  # fmt: skip


def test_a_wrong_password_is_exit_4(secure: Secure) -> None:
    result = voicebus("publish", "speech_detected", "text=hi", url=tls_url(secure, password="no"))
    assert_one_line_error(result, 4, "refused the connection", "check the username and password")
    assert "no@" not in result.stderr  # the password is never shown


def test_an_acl_denied_publish_is_exit_5(secure: Secure) -> None:
    result = voicebus("publish", "tts_started", "text=stt may not speak", url=tls_url(secure))
    assert_one_line_error(
        result, 5, "refused the publish on voicebus/tts/sayStarted", "not authorized"
    )


def test_a_service_user_reads_statuses_and_dead_letters_under_the_acl(secure: Secure) -> None:
    """Their markers ($voicebus/sync/<client id>/...) are allowed by mosquitto/acl."""
    for command in (["status", "--timeout", "3"], ["dlq", "list", "--timeout", "3"]):
        result = voicebus(*command, url=tls_url(secure))
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "command",
    [["wait", "tts_completed"], ["trace", "sess-1"], ["status"], ["dlq", "list"]],
    ids=lambda c: c[0],
)
def test_timeout_1_against_a_broker_that_never_answers_ends_before_the_connect_timeout(
    command: list[str],
) -> None:
    """Every --timeout covers connecting (the connect timeout alone is 10 s)."""
    with socket.socket() as server:  # accepts TCP connections, never sends a CONNACK
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"mqtt://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        result = voicebus(*command, "--timeout", "1", url=url)
        elapsed = time.monotonic() - started
    assert_one_line_error(result, 3, "no MQTT answer (CONNACK)", "within 1s")
    # Far below the 10 s connect timeout: the 1 s covered connecting. (Not "< 2 s":
    # starting the CLI alone took up to 1.05 s with the machine loaded.)
    assert elapsed < 6.0, elapsed


def test_tables_fold_long_topics_never_cut_them() -> None:
    """A rich table on a narrow terminal: every topic whole (folded over lines), no '…'."""
    env = {**cli_env(), "TTY_COMPATIBLE": "1", "COLUMNS": "70", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "voicebus", "topics"],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout and "│" in result.stdout
    column = ""  # the topic column, read down: each topic folded over lines, in order
    for line in result.stdout.splitlines():
        parts = line.split("│")
        if len(parts) >= 4 and parts[2].strip() != "topic":
            column += parts[2].strip()
    assert column == "".join(route.template.template for route in ROUTES)


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(mosquitto: Mosquitto, where: str) -> None:
    args = (
        ["-v", "publish", "health_check"]
        if where == "before"
        else ["publish", "health_check", "-v"]
    )
    result = voicebus(*args, url=mosquitto.url())
    assert result.returncode == 0, result.stderr
    assert "voicebus: DEBUG: " in result.stderr


@pytest.mark.parametrize(
    ("text", "address", "tls", "kind", "needle"),
    [
        ("[Errno -3] Temporary failure in name resolution", ("broker.lan", 1883), False,
         BrokerUnavailableError, "host name 'broker.lan' does not resolve"),
        ("[Errno 111] Connection refused", ("broker.lan", 1883), False,
         BrokerUnavailableError, "is the broker running on broker.lan, and is port 1883 open"),
        ("[Errno 111] Connection refused", ("localhost", 1884), False,
         BrokerUnavailableError, "mosquitto -p 1884"),
        ("[Errno 104] Connection reset by peer", ("127.0.0.1", 8883), False,
         BrokerUnavailableError, "use mqtts://"),
        ("[Errno 104] Connection reset by peer", ("127.0.0.1", 1883), True,
         TLSError, "use mqtt://"),
        ("Operation timed out", ("127.0.0.1", 1883), False,
         BrokerUnavailableError, "no MQTT answer (CONNACK) from 127.0.0.1:1883 within 2s"),
    ],
)  # fmt: skip
def test_connect_errors_name_their_cause(
    text: str, address: tuple[str, int], tls: bool, kind: type[Exception], needle: str
) -> None:
    """The cases a test cannot make on loopback (a remote host, DNS trouble) too."""
    error = connect_error("mqtt://x", aiomqtt.MqttError(text), address, tls, 2.0)
    assert type(error) is kind and needle in str(error), str(error)
    if address[0] != "localhost" and "refused" in text:
        assert "mosquitto -p" not in str(error)
