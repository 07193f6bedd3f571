"""Validate a payload straight into its wire dict, for models simple enough.

`codec.validate_payload` validates a dict into a model instance, then dumps it
(``by_alias=True, exclude_none=True``): the instance is thrown away. For a model
whose fields are plain scalars (str, int, float, bool, optionally None, with a
plain default) and that has no validator, serializer, computed field or custom
init, `wire_validator` builds a pydantic-core typed-dict validator from the
model's own field schemas (a model whose config does more than name its extra
keys and aliases is left out): the same checks, coercions and errors,
keyed by the wire names (aliases), extra keys handled as the model handles them.
Its output is the dump when every value is of `ATOMS`, except that a field or
extra key given as None stays (the caller drops those, as ``exclude_none``
does); an extra container value is not copied as the dump copies it (the caller
validates through the model then). Any other model: None (the caller validates
through the model). `tests/test_fastdump.py` compares both on every route.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import SchemaValidator

_SCALARS = frozenset({"str", "int", "float", "bool"})
ATOMS = frozenset({str, int, float, bool, type(None)})
"""Types a dump returns as they came (a container it copies: the caller checks)."""


class WireValidator:
    """`validate_python` (the typed-dict validator), `keys`: the wire names of the
    model's fields (an output key not among them is an extra key), `nullable`:
    those of the fields that may hold None, and `plain_size`: how many fields every
    output has (required, or with a default) when none of them may hold None, else
    -1. An output of exactly `plain_size` keys is those fields only: atoms, no None,
    no extra key (one look at its length instead of a scan of its keys and values)."""

    __slots__ = ("keys", "nullable", "plain_size", "validate_python")

    def __init__(
        self,
        validator: SchemaValidator,
        keys: frozenset[str],
        nullable: tuple[str, ...] = (),
        plain_size: int = -1,
    ) -> None:
        self.validate_python = validator.validate_python
        self.keys = keys
        self.nullable = nullable
        self.plain_size = plain_size


VALIDATORS: dict[type[BaseModel], WireValidator | None] = {}
"""Model -> its `wire_validator` (None: it has none), for each model asked so far."""


def wire_validator(model: type[BaseModel]) -> WireValidator | None:
    """The typed-dict validator of `model` (see the module doc), or None."""
    try:
        return VALIDATORS[model]
    except KeyError:
        pass
    try:
        validator = _build(model)
    except Exception:  # any schema this does not understand: the model's way
        validator = None
    VALIDATORS[model] = validator
    return validator


def _build(model: type[BaseModel]) -> WireValidator | None:
    schema: Any = model.__pydantic_core_schema__
    if schema.get("type") != "model" or not _only(schema, _MODEL_KEYS):
        return None
    if schema.get("custom_init") or schema.get("root_model") or schema.get("post_init"):
        return None
    inner = schema["schema"]
    if inner.get("type") != "model-fields" or not _only(inner, _FIELDS_KEYS):
        return None
    if inner.get("computed_fields") or inner.get("extras_schema") is not None:
        return None
    config = dict(schema.get("config") or {})
    if not _CONFIG_KEYS.issuperset(config):  # strict, str_strip_whitespace, ...: the model's way
        return None
    by_name = config.get("validate_by_name", False)
    by_alias = config.get("validate_by_alias", True)
    fields: dict[str, Any] = {}
    for name, field in inner["fields"].items():
        if field.get("type") != "model-field" or not _only(field, _FIELD_KEYS):
            return None
        alias = field.get("serialization_alias", name)
        if field.get("validation_alias", name) != alias or alias in fields:
            return None
        plain = _plain_field(field["schema"])
        if plain is None:
            return None
        if by_alias and by_name and name != alias:
            lookup: Any = [[alias], [name]]
        elif by_alias:
            lookup = alias
        else:
            lookup = name
        fields[alias] = {
            "type": "typed-dict-field",
            "schema": plain[0],
            "required": plain[1],
            "validation_alias": lookup,
        }
    typed = {
        "type": "typed-dict",
        "fields": fields,
        "extra_behavior": config.get("extra_fields_behavior", "ignore"),
        "total": False,
    }
    nullable = tuple(k for k, f in fields.items() if _may_be_none(f["schema"]))
    always = [k for k, f in fields.items() if f["required"] or f["schema"]["type"] == "default"]
    plain_size = -1 if set(always) & set(nullable) else len(always)
    return WireValidator(SchemaValidator(typed), frozenset(fields), nullable, plain_size)


_MODEL_KEYS = frozenset(
    {"type", "cls", "schema", "config", "custom_init", "root_model", "ref", "metadata"}
)
_CONFIG_KEYS = frozenset(
    {"title", "extra_fields_behavior", "validate_by_alias", "validate_by_name"}
)
_FIELDS_KEYS = frozenset({"type", "fields", "computed_fields", "model_name"})
_FIELD_KEYS = frozenset({"type", "schema", "validation_alias", "serialization_alias", "metadata"})


def _only(schema: dict[str, Any], keys: frozenset[str]) -> bool:
    return keys.issuperset(schema)


def _plain_field(schema: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """(the field's schema for the typed dict, required), or None if not plain.
    A default of None becomes "not required, no default": the key is left out,
    as the dump's ``exclude_none`` leaves it out."""
    required = True
    if schema.get("type") == "default":
        if not _only(schema, frozenset({"type", "schema", "default"})) or "default" not in schema:
            return None  # a default factory, validate_default, ...
        required = False
        default = schema["default"]
        inner = schema["schema"]
        if not _scalar(inner) or not (default is None or type(default) in _PY_SCALARS):
            return None
        if default is None:
            return inner, False
        return schema, False
    return (schema, required) if _scalar(schema) else None


_PY_SCALARS = frozenset({str, int, float, bool})


def _may_be_none(schema: dict[str, Any]) -> bool:
    """A field of `schema` (a `_plain_field` one) may be given as None."""
    if schema.get("type") == "default":
        schema = schema["schema"]
    return schema.get("type") == "nullable"


def _scalar(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "nullable":
        if not _only(schema, frozenset({"type", "schema"})):
            return False
        schema = schema["schema"]
    return schema.get("type") in _SCALARS and "serialization" not in schema and "ref" not in schema
