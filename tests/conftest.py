"""Shared fixtures: a Mosquitto the tests start, and bus URLs for both transports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from voicebus import EventBus


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
