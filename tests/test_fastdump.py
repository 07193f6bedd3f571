"""`wire.fastdump`: validating a simple payload model straight into its wire keys
gives what the model's validation and dump give, values and errors alike.

`codec.prepare` takes this path for a dict payload of a simple model (most
routes); a regression here would change what every receiver sees.
"""

from __future__ import annotations

import random
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicebus import EventBus, EventType
from voicebus.wire.codec import _dump, prepare
from voicebus.wire.fastdump import wire_validator
from voicebus.wire.models import Payload
from voicebus.wire.routes import ROUTES

VALUES: list[Any] = [
    None, 0, 1, -5, 2**70, 1.5, float("inf"), True, False, "", "x", "1", "2.5",
    "true", "  sp  ", "abcd", [], {}, [1], {"a": [1]}, b"by", "é\u2603",
]  # fmt: skip


def _slow(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        obj = model.__pydantic_validator__.validate_python(data)
        return list(_dump(obj).items())
    except pydantic.ValidationError as exc:
        return [(e["loc"], e["msg"], e["type"]) for e in exc.errors(include_url=False)]


def _fast(model: type[BaseModel], data: dict[str, Any]) -> Any:
    validator = wire_validator(model)
    assert validator is not None
    try:
        out = validator.validate_python(data)
    except pydantic.ValidationError as exc:
        return [(e["loc"], e["msg"], e["type"]) for e in exc.errors(include_url=False)]
    return [(k, v) for k, v in out.items() if v is not None]


class _Forbidding(Payload):
    model_config = ConfigDict(extra="forbid")
    level: int = 3
    name: str | None = "z"
    gain: float = Field(default=1.0, ge=0)
    short: str = Field(default="k", max_length=3)
    on: bool = False


class _Plain(BaseModel):  # not a Payload: aliases only where given, extra keys ignored
    count: int
    label: str = Field(default="q", alias="Label")


class _Strict(Payload):
    model_config = ConfigDict(strict=True, str_strip_whitespace=True)


def test_the_fast_path_matches_the_model_on_every_simple_route() -> None:
    rng = random.Random(13)
    fast_models = {r.model for r in ROUTES if wire_validator(r.model) is not None}
    assert len(fast_models) > 10  # most routes take it
    fast_models |= {_Forbidding, _Plain}
    assert wire_validator(_Strict) is None  # config beyond names: the model's way
    for model in sorted(fast_models, key=lambda m: m.__name__):
        keys: list[str] = ["extra", "sessionId", "site_id", "siteId"]
        for name, info in model.model_fields.items():
            keys += [name, info.alias or name]
        keys = list(dict.fromkeys(keys))
        for _ in range(300):
            count = rng.randint(0, min(5, len(keys)))
            data = {k: rng.choice(VALUES) for k in rng.sample(keys, count)}
            assert repr(_fast(model, data)) == repr(_slow(model, data)), (model, data)


class _Validated(Payload):
    level: int = 0

    @field_validator("level")
    @classmethod
    def _double(cls, value: int) -> int:
        return value * 2


class _Factory(Payload):
    items: list[int] = Field(default_factory=list)


def test_models_with_validators_or_containers_take_the_model_path() -> None:
    assert wire_validator(_Validated) is None
    assert wire_validator(_Factory) is None


def test_a_container_in_extra_keys_is_copied_as_the_dump_copies_it() -> None:
    route = ROUTES.get(EventType.RESPONSE_GENERATED)
    assert wire_validator(route.model) is not None
    nested = [1, {"a": [2]}]
    event, _, _, _ = prepare(route, {"response": "hi", "extra": nested}, "i", "s", None, None, None)
    assert event.data["extra"] == nested
    assert event.data["extra"] is not nested


async def test_a_none_is_left_out_as_over_mqtt() -> None:
    async with EventBus("memory://fastdump") as bus:
        event = await bus.emit(EventType.RESPONSE_GENERATED, {"response": "hi", "x": None})
        assert "x" not in event.data and "sessionId" not in event.data


def test_nullable_names_exactly_the_fields_that_may_hold_none() -> None:
    """`prepare` looks for None values (to leave them out) only in these fields and
    in extra keys: a field missing here would send a ``null`` the model's dump drops."""
    models = {r.model for r in ROUTES if wire_validator(r.model) is not None}
    checked = 0
    for model in sorted(models | {_Forbidding, _Plain}, key=lambda m: m.__name__):
        validator = wire_validator(model)
        assert validator is not None
        for key in validator.keys:
            try:
                validator.validate_python({key: None})
                accepted = True
            except pydantic.ValidationError as exc:
                accepted = not any(e["loc"] == (key,) for e in exc.errors())
            assert accepted == (key in validator.nullable), (model, key)
            checked += accepted
    assert checked > 5  # optional fields are common: the check saw some


async def test_a_field_given_as_none_is_left_out_as_over_mqtt() -> None:
    async with EventBus("memory://fastdump-none") as bus:
        data = {"response": "hi", "sessionId": None, "siteId": "kitchen"}
        event = await bus.emit(EventType.RESPONSE_GENERATED, data)
        assert "sessionId" not in event.data and event.data["siteId"] == "kitchen"


def test_an_output_of_plain_size_keys_holds_the_fields_always_there_and_no_none() -> None:
    """`prepare` skips the extra-key and None scans for an output of exactly
    `plain_size` keys: that must mean no extra key, no None, only atoms."""
    rng = random.Random(29)
    models = {r.model for r in ROUTES if wire_validator(r.model) is not None}
    sized = 0
    for model in sorted(models | {_Forbidding, _Plain}, key=lambda m: m.__name__):
        validator = wire_validator(model)
        assert validator is not None
        if validator.plain_size < 0:
            assert set(validator.nullable) & {k for k in validator.keys if k in _defaults(model)}
            continue
        sized += 1
        keys = [*validator.keys, "extra", "other", "sessionId"]
        for _ in range(300):
            data = {k: rng.choice(VALUES) for k in rng.sample(keys, rng.randint(0, len(keys)))}
            try:
                out = validator.validate_python(data)
            except pydantic.ValidationError:
                continue
            if len(out) == validator.plain_size:
                assert validator.keys.issuperset(out), (model, data)
                assert all(type(v) in (str, int, float, bool) for v in out.values()), (model, out)
    assert sized > 10


def _defaults(model: type[BaseModel]) -> set[str]:
    """Wire names of the fields every output has: required, or with a default."""
    return {
        info.alias or name
        for name, info in model.model_fields.items()
        if info.is_required() or info.default is not None
    }
