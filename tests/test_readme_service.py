"""Every snippet of the README's "Writing a service", run as a user runs it.

Each ```python block of that section starts with ``# NAME.py: ...``; the tests save
it as NAME.py and run ``python NAME.py`` with ``VOICEBUS_URL`` naming a broker this
module starts. A snippet no test below knows fails `test_every_snippet_has_a_test`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.test_cli import Background, cli_env
from tests.test_service import assert_stopped_cleanly, status_of, stop

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Writing a service"
SERVICE = "llm.py"
CLIENTS = {"ask.py": "You said: what time is it", "ask_by_hand.py": "You said: turn on the light"}
"""The client snippets and what each prints when the service answers."""


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def snippets() -> dict[str, str]:
    """The section's python blocks by the file name on their first line."""
    found: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", section(), re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\w+\.py): .+", first)
        assert match, f"a snippet in {SECTION!r} must start with '# NAME.py: ...': {first!r}"
        assert match.group(1) not in found, f"two snippets named {match.group(1)}"
        found[match.group(1)] = block
    return found


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("readme-service-broker")) as mosquitto:
        yield mosquitto


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The snippets saved as the files they name."""
    directory = tmp_path_factory.mktemp("readme-service")
    for name, code in snippets().items():
        (directory / name).write_text(code)
    return directory


def run(script: Path, broker: Mosquitto) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=script.parent,
        env=cli_env(broker.url()),
    )


def start_service(files: Path, broker: Mosquitto) -> Background:
    return Background([sys.executable, str(files / SERVICE)], cli_env(broker.url()))


def wait_until_ready(service: Background, broker: Mosquitto) -> None:
    """Its marker line, and its retained status online (it was offline before)."""
    service.wait_for("llm: ready")
    assert status_of(broker, "llm") == "online"


def test_every_snippet_has_a_test() -> None:
    assert set(snippets()) == {SERVICE, *CLIENTS}


def test_the_section_says_what_a_newcomer_needs() -> None:
    text = section()
    code = "\n".join(snippets().values())
    for needed in ("voicebus.run(main)", "await bus.run_forever()", "async with EventBus("):
        assert needed in code, needed
    assert "await bus.ready()" in code and "correlation_id=" in code
    assert "**`None` on timeout**" in text
    assert re.search(r"`wait_for`\s+\*before\*\s+the\s+`emit`", text)
    # the pattern: the wait registered, then the emit, then awaited
    by_hand = snippets()["ask_by_hand.py"]
    order = [by_hand.index(s) for s in ("bus.wait_for(", "await bus.emit(", "await waiting")]
    assert order == sorted(order)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_service_stops_cleanly_on(files: Path, broker: Mosquitto, sig: signal.Signals) -> None:
    with start_service(files, broker) as service:
        wait_until_ready(service, broker)
        code, _, err, elapsed = stop(service, sig)
    assert_stopped_cleanly(code, err, elapsed, broker, "llm")


@pytest.mark.parametrize("client", CLIENTS)
def test_the_client_gets_its_answer(files: Path, broker: Mosquitto, client: str) -> None:
    with start_service(files, broker) as service:
        wait_until_ready(service, broker)
        result = run(files / client, broker)
        code, _, err, elapsed = stop(service, signal.SIGTERM)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CLIENTS[client], result.stdout + result.stderr
    assert_stopped_cleanly(code, err, elapsed, broker, "llm")


@pytest.mark.parametrize("client", CLIENTS)
def test_without_the_service_the_client_reports_the_timeout(
    files: Path, broker: Mosquitto, client: str, tmp_path: Path
) -> None:
    """`None` after the timeout, checked: the snippet prints it and exits 0 (its 5 s
    timeout shortened here to keep the suite fast)."""
    code = (files / client).read_text()
    assert code.count("timeout=5") == 1
    script = tmp_path / client
    script.write_text(code.replace("timeout=5", "timeout=0.5"))
    result = run(script, broker)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no answer within 5 s"), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
