"""Custom resources against their CustomResourceDefinition's `openAPIV3Schema`.

Upstream's apiextensions server prunes fields the structural schema does not declare (unless
`x-kubernetes-preserve-unknown-fields`) and then validates what is left. This module does both,
for the schema keywords CRDs use most: `type` (object, array, string, integer, number,
boolean), `nullable`, `properties`, `additionalProperties`, `items`, `required`, `enum`,
`minimum`/`maximum` (and their exclusive forms), `minLength`/`maxLength`, `pattern`,
`minItems`/`maxItems`, `x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource`.
Error messages follow upstream's wording (`spec.replicas in body must be of type integer:
"string"`), so kubectl shows what users are used to.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool,
}

Cause = tuple[str, str, str]  # field, reason, message


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches_type(value: Any, wanted: str) -> bool:
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if wanted == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    kind = _TYPES.get(wanted)
    return kind is None or isinstance(value, kind) and not (
        kind is not bool and isinstance(value, bool))


def prune(value: Any, schema: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """(value without the fields schema does not declare, their paths); value is not
    modified."""
    unknown: list[str] = []
    return _prune(value, schema, "", unknown, top=True), unknown


def _prune(value: Any, schema: Any, path: str, unknown: list[str], top: bool = False) -> Any:
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        embedded = top or schema.get("x-kubernetes-embedded-resource")
        extra = schema.get("additionalProperties")
        if properties is None and isinstance(extra, dict):
            return {k: _prune(v, extra, f"{path}[{k}]", unknown) for k, v in value.items()}
        if properties is None and not top:
            return value
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties and key in properties:
                out[key] = _prune(item, properties[key], where, unknown)
            elif embedded and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
            else:
                unknown.append(where)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune(v, items, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def validate(value: Any, schema: dict[str, Any] | None, path: str = "") -> list[Cause]:
    """Everything wrong with value under schema, as (field, reason, message)."""
    causes: list[Cause] = []
    if isinstance(schema, dict):
        _validate(value, schema, path, causes, top=True)
    return causes


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def _validate(value: Any, schema: dict[str, Any], path: str, causes: list[Cause],
              top: bool = False) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type") and not top:
            causes.append((where, "FieldValueTypeInvalid",
                           f'Invalid value: "null": {where} in body must be of type '
                           f'{schema["type"]}: "null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or (isinstance(value, int) and
                                           not isinstance(value, bool))):
            causes.append((where, "FieldValueTypeInvalid",
                           f"Invalid value: {_show(value)}: {where} in body must be of type "
                           f"integer or string: {_show(value)}"))
        return
    wanted = schema.get("type")
    if wanted and not top and not _matches_type(value, wanted):
        causes.append((where, "FieldValueTypeInvalid",
                       f"Invalid value: {_show(value)}: {where} in body must be of type "
                       f'{wanted}: "{_type_of(value)}"'))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        causes.append((where, "FieldValueNotSupported",
                       f"Unsupported value: {_show(value)}: supported values: {allowed}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (value < low or (schema.get("exclusiveMinimum") and
                                                value == low)):
            causes.append((where, "FieldValueInvalid",
                           f"Invalid value: {value}: {where} in body should be greater than or "
                           f"equal to {low}"))
        if high is not None and (value > high or (schema.get("exclusiveMaximum") and
                                                  value == high)):
            causes.append((where, "FieldValueInvalid",
                           f"Invalid value: {value}: {where} in body should be less than or "
                           f"equal to {high}"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append((where, "FieldValueInvalid",
                           f'Invalid value: "{value}": {where} in body should be at least '
                           f'{schema["minLength"]} chars long'))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append((where, "FieldValueTooLong",
                           f"Too long: may not be more than {schema['maxLength']} bytes"))
        pattern = schema.get("pattern")
        if pattern:
            try:
                ok = re.search(pattern, value) is not None
            except re.error:
                ok = True  # an ECMA pattern Python cannot read: upstream would have refused it
            if not ok:
                causes.append((where, "FieldValueInvalid",
                               f'Invalid value: "{value}": {where} in body should match '
                               f"'{pattern}'"))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append((where, "FieldValueInvalid",
                           f"Invalid value: {len(value)}: {where} in body should have at least "
                           f"{schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append((where, "FieldValueTooMany",
                           f"Too many: {len(value)}: must have at most {schema['maxItems']} "
                           "items"))
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", causes)
    if isinstance(value, dict):
        for name in schema.get("required") or []:
            if name not in value:
                field = f"{path}.{name}" if path else name
                causes.append((field, "FieldValueRequired", "Required value"))
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key)
            if child is None and isinstance(extra, dict):
                child = extra
            if isinstance(child, dict) and not (top and key in ("apiVersion", "kind",
                                                                 "metadata")):
                _validate(item, child, f"{path}.{key}" if path else key, causes)
