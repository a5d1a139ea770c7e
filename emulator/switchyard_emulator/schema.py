"""Strict request validation, driven by the pinned Azure SDKs' own model classes.

The azure-mgmt SDKs are generated from the same API specs Azure validates against, so their
models know every field of a resource: its wire name, its type, whether it is read-only and
whether it is required. Two generator styles are walked:

* typespec models (azure-mgmt-compute 39, -network 33, -resource 26): `rest_field` descriptors
  with `visibility` (["read"] only = read-only) and type annotations (`Optional[...]` = optional);
* msrest models (azure-mgmt-monitor 7): `_attribute_map` (wire keys, flattened with dots) plus
  `_validation` (`readonly` / `required`).

`validate(body, schema)` returns the body normalized (field names in the spec's casing, read-only
fields dropped) or raises a 400 ArmError whose `target` is the offending field path, e.g.
`properties.requestRoutingRules[0].properties.backendAddressPool.id`.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from switchyard_emulator.errors import invalid_content

Kind = Literal["object", "list", "map", "str", "int", "float", "bool", "datetime", "duration", "any", "enum"]


@dataclass
class Field:
    wire: str
    schema: Schema
    required: bool = False
    readonly: bool = False


@dataclass
class Schema:
    kind: Kind
    name: str
    item: Schema | None = None  # list / map values
    enum_values: tuple[str, ...] = ()
    # objects: filled lazily (models are recursive), keyed by lower-cased wire name
    _fields: dict[str, Field] | None = None
    _build: typing.Callable[[], dict[str, Field]] | None = None
    discriminator: str | None = None  # wire name of the discriminator property
    subtypes: dict[str, typing.Callable[[], Schema]] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, Field]:
        if self._fields is None:
            assert self._build is not None
            self._fields = {}  # guard against re-entry while building recursive models
            self._fields = self._build()
        return self._fields


_PRIMITIVES: dict[Any, Kind] = {
    str: "str",
    bytes: "str",
    int: "int",
    float: "float",
    bool: "bool",
    dt.datetime: "datetime",
    dt.date: "datetime",
    dt.timedelta: "duration",
}

# -- typespec models ---------------------------------------------------------------------------------

_typespec_cache: dict[type, Schema] = {}


def _is_typespec_model(t: Any) -> bool:
    return isinstance(t, type) and getattr(t, "_is_model", False) and hasattr(t, "__mro__")


def _rest_fields(cls: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if not attr.startswith("_") and hasattr(value, "_rest_name_input") and hasattr(value, "_visibility"):
                found[attr] = value
    return found


def _type_hints(cls: type) -> dict[str, Any]:
    module = sys.modules[cls.__module__]
    namespace = dict(vars(module))
    # the generated modules import their package as `_models` only under TYPE_CHECKING
    package = cls.__module__.rsplit(".", 1)[0]
    namespace.setdefault("_models", sys.modules[package])
    return typing.get_type_hints(cls, globalns=namespace)


def typespec_schema(cls: type) -> Schema:
    cached = _typespec_cache.get(cls)
    if cached is not None:
        return cached
    schema = Schema(kind="object", name=cls.__name__)
    _typespec_cache[cls] = schema

    def build() -> dict[str, Field]:
        hints = _type_hints(cls)
        result: dict[str, Field] = {}
        for attr, rf in _rest_fields(cls).items():
            wire = rf._rest_name_input or attr
            annotation = hints.get(attr, Any)
            optional = _is_optional(annotation)
            visibility = rf._visibility or []
            readonly = bool(visibility) and set(visibility) <= {"read", "query"}
            result[wire.lower()] = Field(
                wire=wire,
                schema=_from_annotation(annotation),
                required=not optional and not readonly and not getattr(rf, "_is_discriminator", False),
                readonly=readonly,
            )
        return result

    schema._build = build
    mapping = getattr(cls, "__mapping__", None)
    if mapping:
        for klass in cls.__mro__:
            for value in vars(klass).values():
                if getattr(value, "_is_discriminator", False):
                    schema.discriminator = value._rest_name_input
                    break
            if schema.discriminator:
                break
        for disc_value, subclass in mapping.items():
            if subclass is not cls:
                schema.subtypes[str(disc_value).lower()] = functools.partial(typespec_schema, subclass)
    return schema


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _from_annotation(annotation: Any) -> Schema:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _from_annotation(members[0])
        if all(a is str or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in members):
            return Schema(kind="str", name="String")  # extensible enum: any string is accepted
        schemas = [_from_annotation(a) for a in members]
        if all(s.kind == "str" for s in schemas):
            return Schema(kind="str", name="String")
        return Schema(kind="any", name="Object")
    if origin is list or origin is typing.List:  # noqa: UP006 - both spellings appear in SDKs
        args = typing.get_args(annotation)
        return Schema(kind="list", name="List", item=_from_annotation(args[0] if args else Any))
    if origin is dict or origin is typing.Dict:  # noqa: UP006
        args = typing.get_args(annotation)
        return Schema(kind="map", name="Dictionary", item=_from_annotation(args[1] if args else Any))
    if origin is Literal:
        values = tuple(str(v.value if isinstance(v, enum.Enum) else v) for v in typing.get_args(annotation))
        return Schema(kind="enum", name="Literal", enum_values=values)
    if annotation in _PRIMITIVES:
        kind = _PRIMITIVES[annotation]
        return Schema(kind=kind, name=annotation.__name__)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return Schema(kind="enum", name=annotation.__name__, enum_values=tuple(str(m.value) for m in annotation))
    if _is_typespec_model(annotation):
        return typespec_schema(annotation)
    return Schema(kind="any", name="Object")


# -- msrest models -----------------------------------------------------------------------------------

_msrest_cache: dict[type, Schema] = {}
_MSREST_PRIMITIVES: dict[str, Kind] = {
    "str": "str",
    "int": "int",
    "long": "int",
    "float": "float",
    "bool": "bool",
    "iso-8601": "datetime",
    "rfc-1123": "datetime",
    "date": "datetime",
    "duration": "duration",
    "object": "any",
    "bytearray": "str",
    "base64": "str",
}


def msrest_schema(cls: type) -> Schema:
    cached = _msrest_cache.get(cls)
    if cached is not None:
        return cached
    schema = Schema(kind="object", name=cls.__name__)
    _msrest_cache[cls] = schema
    models_module = sys.modules[cls.__module__]

    def build() -> dict[str, Field]:
        root: dict[str, Field] = {}
        validation: dict[str, dict[str, Any]] = getattr(cls, "_validation", {}) or {}
        for attr, spec in cls._attribute_map.items():  # type: ignore[attr-defined]
            path = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", spec["key"])]
            rules = validation.get(attr, {})
            target = root
            # flattened keys ("properties.profiles") live in implicit nested objects
            for part in path[:-1]:
                holder = target.get(part.lower())
                if holder is None:
                    holder = Field(wire=part, schema=Schema(kind="object", name=part, _fields={}))
                    target[part.lower()] = holder
                target = holder.schema.fields
            target[path[-1].lower()] = Field(
                wire=path[-1],
                schema=_from_msrest_type(spec["type"], models_module),
                required=bool(rules.get("required")) and not rules.get("readonly"),
                readonly=bool(rules.get("readonly")),
            )
        _propagate_required(root)
        return root

    schema._build = build
    return schema


def _propagate_required(fields: dict[str, Field]) -> None:
    """An implicit flattening holder ("properties") is required when any field inside it is."""
    for f in fields.values():
        if f.schema.kind == "object" and f.schema._build is None and f.schema._fields is not None:
            _propagate_required(f.schema._fields)
            if any(sub.required for sub in f.schema._fields.values()):
                f.required = True
            if f.schema._fields and all(sub.readonly for sub in f.schema._fields.values()):
                f.readonly = True


def _from_msrest_type(type_name: str, module: Any) -> Schema:
    if type_name.startswith("[") and type_name.endswith("]"):
        return Schema(kind="list", name="List", item=_from_msrest_type(type_name[1:-1], module))
    if type_name.startswith("{") and type_name.endswith("}"):
        return Schema(kind="map", name="Dictionary", item=_from_msrest_type(type_name[1:-1], module))
    if type_name in _MSREST_PRIMITIVES:
        return Schema(kind=_MSREST_PRIMITIVES[type_name], name=type_name)
    model = getattr(module, type_name, None)
    if isinstance(model, type) and hasattr(model, "_attribute_map"):
        return msrest_schema(model)
    return Schema(kind="any", name=type_name)


# -- validation --------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^-?P(?=\d|T\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$", re.IGNORECASE
)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_error(value: Any, schema: Schema, path: str) -> Exception:
    expected = {
        "object": f"object of type '{schema.name}'",
        "list": "array",
        "map": "object (dictionary)",
        "str": "string",
        "int": "integer",
        "float": "number",
        "bool": "boolean",
        "datetime": "ISO 8601 date-time string",
        "duration": "ISO 8601 duration string",
        "enum": f"one of {', '.join(schema.enum_values)}",
        "any": "value",
    }[schema.kind]
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return invalid_content(
        f"Error converting value {shown} at path '{path or '(root)'}': expected {expected}.",
        target=path or None,
    )


def validate(value: Any, schema: Schema, path: str = "", *, keep_nulls: bool = False) -> Any:
    """Return `value` normalized against `schema`, or raise a 400 ArmError naming the field path.

    `keep_nulls` is for merge-patch bodies, where null means "remove this field".
    """
    if value is None:
        return None
    kind = schema.kind
    if kind == "any":
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise _type_error(value, schema, path)
        if schema.discriminator and schema.subtypes:
            disc = next((v for k, v in value.items() if k.lower() == schema.discriminator.lower()), None)
            if isinstance(disc, str) and disc.lower() in schema.subtypes:
                schema = schema.subtypes[disc.lower()]()
        fields = schema.fields
        result: dict[str, Any] = {}
        for key, item in value.items():
            spec = fields.get(key.lower()) if isinstance(key, str) else None
            if spec is None:
                raise invalid_content(
                    f"Could not find member '{key}' on object of type '{schema.name}'. Path '{_join(path, str(key))}'.",
                    target=_join(path, str(key)),
                )
            if spec.readonly:
                continue  # read-only fields are ignored on input and recomputed on write
            if item is None and not keep_nulls:
                continue
            result[spec.wire] = (
                None if item is None else validate(item, spec.schema, _join(path, spec.wire), keep_nulls=keep_nulls)
            )
        if not keep_nulls:
            for spec in fields.values():
                if spec.required and spec.wire not in result:
                    missing = _join(path, spec.wire)
                    raise invalid_content(
                        f"Required property '{spec.wire}' not found in JSON. Path '{missing}'.",
                        target=missing,
                    )
        return result
    if kind == "list":
        if not isinstance(value, list):
            raise _type_error(value, schema, path)
        assert schema.item is not None
        return [validate(v, schema.item, f"{path}[{i}]", keep_nulls=keep_nulls) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _type_error(value, schema, path)
        assert schema.item is not None
        return {k: validate(v, schema.item, _join(path, k), keep_nulls=keep_nulls) for k, v in value.items()}
    if kind == "str":
        if not isinstance(value, str):
            raise _type_error(value, schema, path)
        return value
    if kind == "enum":
        if not isinstance(value, str):
            raise _type_error(value, schema, path)
        for allowed in schema.enum_values:
            if allowed.lower() == value.lower():
                return allowed
        raise _type_error(value, schema, path)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, schema, path)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, schema, path)
        if isinstance(value, float):
            if not value.is_integer():
                raise _type_error(value, schema, path)
            return int(value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, schema, path)
        return value
    if kind == "datetime":
        if not isinstance(value, str):
            raise _type_error(value, schema, path)
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _type_error(value, schema, path) from None
        return value
    if kind == "duration":
        if not isinstance(value, str) or not _DURATION.match(value):
            raise _type_error(value, schema, path)
        return value
    raise AssertionError(f"unknown schema kind {kind}")
