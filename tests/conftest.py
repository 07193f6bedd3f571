"""Shared fixtures: a Mosquitto the tests start, and bus URLs for both transports.

Before any test runs, `pytest_collection_finish` checks the programs the
selected tests need (mosquitto, its clients, node, the contract parser, node-red)
and stops the run with one line naming what to install when one is missing (also
on CI: a missing program is never a skip).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import broker as broker_module
from tests.broker import Mosquitto
from voicebus import EventBus

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_PARSER_TEST = "test_contract.py::test_asyncapi_parser_accepts_the_document"
"""The one test that runs node with @asyncapi/parser (``npm ci``)."""
NODE_MODULES = ROOT / "node_modules"
"""Where ``npm ci`` installs the node packages the tests run."""
NODE_RED_TESTS = "test_node_red.py::"
"""The tests that run the shipped flows in a real Node-RED (``npm ci``)."""
_BROKER_FIXTURES = {"mosquitto", "fresh_mosquitto"}


def _needs_broker(item: pytest.Item) -> bool:
    """A test that starts mosquitto: through a fixture, an mqtt `bus_url`, or a module
    that uses tests/broker.py itself."""
    if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("bus_url") == "mqtt":
        return True
    module = getattr(item, "module", None)
    names = vars(module).values() if module is not None else ()
    return any(
        value is broker_module or getattr(value, "__module__", None) == broker_module.__name__
        for value in names
    )


def missing_prerequisites(items: list[pytest.Item]) -> str | None:
    """One line naming what the selected tests need and this machine lacks, or None."""
    missing: list[str] = []
    apt: list[str] = []
    npm = False
    if any(_needs_broker(item) for item in items):
        # The same rule as tests/broker.py: on PATH, else /usr/sbin (not on a user's PATH).
        if shutil.which(broker_module.MOSQUITTO) is None:
            missing.append("mosquitto")
            apt.append("mosquitto")
        if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None:
            missing.append("mosquitto_pub/mosquitto_sub")
        if missing:
            apt.append("mosquitto-clients")
    node_packages = []
    if any(item.nodeid.endswith(CONTRACT_PARSER_TEST) for item in items):
        node_packages.append("@asyncapi/parser")
    if any(NODE_RED_TESTS in item.nodeid for item in items):
        node_packages.append("node-red")
    if node_packages:
        if shutil.which("node") is None:
            missing.append("node")
            apt += ["nodejs", "npm"]
            npm = True
        else:
            absent = [p for p in node_packages if not (NODE_MODULES / p).is_dir()]
            if absent:
                missing.append(f"{', '.join(absent)} (node_modules)")
                npm = True
    if not missing:
        return None
    steps = [f"sudo apt-get install {' '.join(apt)}"] if apt else []
    if npm:
        steps.append("npm ci")
    return (
        f"{', '.join(missing)} not found; install first: `{' && '.join(steps)}` "
        "(see README, Two commands)"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop at once, with one line, when a program the selected tests need is missing
    (after ``-k``/``-m``/``--deselect``: only what will run counts)."""
    message = missing_prerequisites(session.items)
    if message is not None:
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker from mosquitto/mosquitto.conf for the whole run (never port 1883)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, for tests that stop, kill or restart it."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(params=["memory", "mqtt"])
def bus_url(request: pytest.FixtureRequest) -> str:
    """A bus URL per transport; the memory one is private to the test."""
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex[:8]}"
    broker: Mosquitto = request.getfixturevalue("mosquitto")
    return broker.url()


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[EventBus]:
    async with EventBus(bus_url) as b:
        yield b


@pytest.fixture
async def peer(bus_url: str) -> AsyncIterator[EventBus]:
    """A second bus on the same broker (another service)."""
    async with EventBus(bus_url) as b:
        yield b
