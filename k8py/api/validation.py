"""Validation of the built-in kinds beyond names and metadata: upstream's rules, kind by kind.

A validator takes the object about to be stored and returns causes `(field, reason,
message)`; any cause makes the request a 422 Invalid. Only the kinds listed here are
validated so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from k8py.api.resources import Resource

Cause = tuple[str, str, str]
_PLURAL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _crd(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    if not group or "." not in group:
        causes.append(("spec.group", "FieldValueInvalid",
                       f'Invalid value: "{group}": should be a domain with at least one dot'))
    if not plural or not _PLURAL.match(plural):
        causes.append(("spec.names.plural", "FieldValueInvalid",
                       f'Invalid value: "{plural}": a lowercase RFC 1123 label is required'))
    if not kind or not _KIND.match(kind):
        causes.append(("spec.names.kind", "FieldValueRequired"
                       if not kind else "FieldValueInvalid",
                       "Required value" if not kind else f'Invalid value: "{kind}"'))
    expected = f"{plural}.{group}"
    if obj["metadata"].get("name") != expected:
        causes.append(("metadata.name", "FieldValueInvalid",
                       f'Invalid value: "{obj["metadata"].get("name")}": must be '
                       f"spec.names.plural+\".\"+spec.group"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", "FieldValueNotSupported",
                       f'Unsupported value: "{spec.get("scope")}": supported values: '
                       '"Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "FieldValueRequired", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", "FieldValueInvalid",
                       "Invalid value: must have exactly one version marked as storage "
                       "version"))
    for i, version in enumerate(versions):
        if not isinstance((version.get("schema") or {}).get("openAPIV3Schema"), dict):
            causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", "FieldValueRequired",
                           "Required value: schemas are required"))
    return causes


VALIDATORS: dict[tuple[str, str], Callable[[dict[str, Any]], list[Cause]]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}


def validate(resource: Resource, obj: dict[str, Any]) -> list[Cause]:
    validator = VALIDATORS.get((resource.group, resource.plural))
    return validator(obj) if validator else []
