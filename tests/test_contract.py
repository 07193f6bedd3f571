"""The contract in topics/: generated from the route table, committed, parser-valid."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from voicebus.cli import contract
from voicebus.wire.events import EventType
from voicebus.wire.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ROOT / "topics"
PARSER = ROOT / "node_modules" / "@asyncapi" / "parser"
VALIDATOR = ROOT / "scripts" / "validate_asyncapi.mjs"
HERMES = ROOT / "tests" / "fixtures" / "hermes"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _doc() -> dict[str, Any]:
    return json.loads((TOPICS / contract.ASYNCAPI_FILE).read_text("utf-8"))


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return _resolve(doc, node["$ref"])
    return node


# --- committed == generated --------------------------------------------------------------


def test_committed_contract_is_up_to_date() -> None:
    problems = contract.differences(TOPICS)
    assert problems == [], (
        "topics/ differs from what the code generates; run `voicebus contract export "
        "topics/` (or `python -m voicebus contract export topics/`) and commit:\n"
        + "\n".join(problems)
    )


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = contract.export(tmp_path / "a")
    second = contract.export(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    for a, b in zip(first, second, strict=True):
        text = a.read_text("utf-8")
        assert text == b.read_text("utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n")
        if a.suffix == ".json":
            assert (
                text
                == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            )
    assert contract.differences(tmp_path / "a") == []


def test_export_removes_stale_schemas_and_check_reports_drift(tmp_path: Path) -> None:
    contract.export(tmp_path)
    stale = tmp_path / "schemas" / "gone_event.json"
    stale.write_text("{}\n")
    (tmp_path / "README.md").write_text("edited by hand\n")
    (tmp_path / "schemas" / "speech_detected.json").unlink()
    problems = contract.differences(tmp_path)
    assert any(p.startswith("differs:") and p.endswith("README.md") for p in problems)
    assert any(p.startswith("missing:") and "speech_detected" in p for p in problems)
    assert any(p.startswith("not generated any more:") for p in problems)
    contract.export(tmp_path)
    assert not stale.exists()
    assert contract.differences(tmp_path) == []


def test_cli_export_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(contract.contract_app, ["export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "asyncapi.json" in result.output
    assert runner.invoke(contract.contract_app, ["check", str(tmp_path)]).exit_code == 0
    (tmp_path / "asyncapi.json").write_text("{}\n")
    result = runner.invoke(contract.contract_app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "voicebus contract export topics/" in result.output


def test_python_dash_m_export(tmp_path: Path) -> None:
    out = tmp_path / "topics"
    subprocess.run(
        [sys.executable, "-m", "voicebus.cli.contract", "export", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert contract.differences(out) == []


# --- what the AsyncAPI document says ---------------------------------------------------


def test_asyncapi_document_covers_every_route() -> None:
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["defaultContentType"] == "application/json"
    server = doc["servers"]["mosquitto"]
    assert (server["host"], server["protocol"], server["protocolVersion"]) == (
        "127.0.0.1:1883",
        "mqtt",
        "5",
    )
    assert server["bindings"]["mqtt"]["bindingVersion"] == "0.2.0"
    assert len(doc["channels"]) == len(ROUTES) == len(EventType)
    for route in ROUTES:
        ident = str(route.event_type.value)
        channel = doc["channels"][ident]
        assert channel["address"] == route.template.template
        assert sorted(channel.get("parameters", {})) == sorted(route.template.parameters)
        assert set(re.findall(r"\{([^}]+)\}", channel["address"])) == set(
            channel.get("parameters", {})
        )
        message = _resolve(doc, channel["messages"][ident]["$ref"])
        assert message["x-voicebus-event-type"] == ident
        assert message.get("x-hermes-class") == route.hermes
        payload = _resolve(doc, message["payload"]["$ref"])
        if route.binary:  # raw bytes of the content type, declared over the trait's JSON
            assert message["contentType"] == route.content_type == "audio/wav"
            assert message["bindings"]["mqtt"]["contentType"] == "audio/wav"
            assert payload["type"] == "string" and payload["format"] == "binary"
            assert payload["contentMediaType"] == "audio/wav"
        else:
            assert message["contentType"] == "application/json"
            assert payload["type"] == "object"
        for action in ("send", "receive"):
            operation = doc["operations"][f"{action}_{ident}"]
            assert operation["action"] == action
            assert _resolve(doc, operation["channel"]["$ref"]) is channel
            assert _resolve(doc, operation["messages"][0]["$ref"]) is message
            assert operation["bindings"]["mqtt"] == {
                "bindingVersion": "0.2.0",
                "qos": route.qos,
                "retain": route.retain,
                **({} if route.ttl is None else {"messageExpiryInterval": math.ceil(route.ttl)}),
            }


def test_correlation_id_and_envelope_are_documented() -> None:
    doc = _doc()
    trait = doc["components"]["messageTraits"]["envelope"]
    correlation = _resolve(doc, trait["correlationId"]["$ref"])
    assert correlation["location"] == "$message.header#/correlationData"
    assert "sessionId" in correlation["description"]
    assert {"id", "type", "source", "time", "metadata", "correlationData"} <= set(
        trait["headers"]["properties"]
    )
    assert trait["bindings"]["mqtt"]["contentType"] == "application/json"
    for message in doc["components"]["messages"].values():
        assert message["traits"] == [{"$ref": "#/components/messageTraits/envelope"}]


def test_payload_parameters_point_into_the_payload() -> None:
    doc = _doc()
    vad = doc["channels"][EventType.SPEECH_ENDED.value]["parameters"]["siteId"]
    assert vad["location"] == "$message.payload#/siteId"
    hotword = doc["channels"][EventType.WAKE_WORD_DETECTED.value]["parameters"]["wakewordId"]
    assert hotword["location"] == "$message.payload#/wakewordId"  # in both (issue 11)
    play = doc["channels"][EventType.AUDIO_PLAYBACK_ENDED.value]["parameters"]["siteId"]
    assert "location" not in play and "topic only" in play["description"]
    intent = doc["channels"][EventType.INTENT_RECOGNIZED.value]["parameters"]["intentName"]
    assert intent["location"] == "$message.payload#/intent/intentName"  # nested: NluIntent


# --- the JSON Schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: str(r.event_type.value))
def test_schema_file_is_the_model_on_the_wire(route: Any) -> None:
    schema = json.loads((TOPICS / "schemas" / f"{route.event_type.value}.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    if route.binary:  # the payload is the raw bytes; every other key is in the topic
        assert (schema["type"], schema["format"]) == ("string", "binary")
        assert schema["contentMediaType"] == route.content_type
        assert route.topic_only == set(route.template.parameters)
        assert set(route.model.model_fields) - {"session_id"} == {
            route.body,
            *(_snake(p) for p in route.template.parameters),
        }
        return
    model = route.model.model_json_schema(by_alias=True)
    wire = set(model["properties"]) - route.topic_only
    assert set(schema["properties"]) == wire
    assert set(schema.get("required", [])) == set(model.get("required", [])) - route.topic_only
    assert all("_" not in key for key in schema["properties"])  # camelCase wire keys
    assert schema["additionalProperties"] is True  # extra keys are kept
    # nested models (Hermes `intent`, `init`, slots) are shared components in AsyncAPI
    components = _doc()["components"]["schemas"]
    defs = schema.get("$defs", {})
    for name, sub in defs.items():
        assert components[name] == json.loads(_to_components(json.dumps(sub)))
    assert components[str(route.event_type.value)] == json.loads(
        _to_components(
            json.dumps({k: v for k, v in schema.items() if k not in ("$schema", "$defs")})
        )
    )


def _to_components(text: str) -> str:
    return text.replace('"#/$defs/', '"#/components/schemas/')


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def test_hermes_payloads_validate_against_the_schemas() -> None:
    """What rhasspy-hermes writes (nulls included) fits the published schema."""
    import jsonschema  # a dev dependency: its absence must fail, not skip

    by_topic = {}
    for path in sorted(HERMES.glob("*.json")):
        fixture = json.loads(path.read_text())
        found = ROUTES.match(fixture["topic"])
        if found is not None:
            by_topic[path.stem] = (found[0], fixture["payload"])
        elif fixture["topic"].startswith("hermes/error/"):  # the Rhasspy error shape
            for event_type in (EventType.ERROR_OCCURRED, EventType.MODEL_DOWNLOAD_FAILED):
                by_topic[f"{path.stem}/{event_type.value}"] = (
                    ROUTES.get(event_type),
                    fixture["payload"],
                )
    assert len(by_topic) == 12 + 26 + 2 * 14  # seed types, commands and dialogue, errors
    for name, (route, payload) in by_topic.items():
        schema = json.loads((TOPICS / "schemas" / f"{route.event_type.value}.json").read_text())
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(payload))
        assert errors == [], f"{name}: {[e.message for e in errors]}"


def test_readme_table() -> None:
    text = (TOPICS / "README.md").read_text("utf-8")
    assert "| EventType | topic | QoS | retain | ttl | payload fields | Hermes class |" in text
    for route in ROUTES:
        row = next(
            line for line in text.splitlines() if line.startswith(f"| {route.event_type.name} |")
        )
        assert f"`{route.template.template}`" in row
        if route.hermes:
            assert f"`{route.hermes}`" in row
        assert f"schemas/{route.event_type.value}.json" in row
        ttl = "-" if route.ttl is None else f"{route.ttl:g}"
        assert row.split(" | ")[4] == ttl, row


# --- @asyncapi/parser (npm) ---------------------------------------------------------------


def test_asyncapi_parser_accepts_the_document() -> None:
    node = shutil.which("node")
    if node is None or not PARSER.is_dir():
        message = (
            "@asyncapi/parser is not installed: run `npm install --no-audit --no-fund` "
            "at the repository root (node is required)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [node, str(VALIDATOR), str(TOPICS / contract.ASYNCAPI_FILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "0 error(s)" in output
    assert not re.search(r"^error:", output, re.M), output
