"""Upstream's defaulting for the built-in kinds, applied on create and update.

Each kind's defaults are one small function of the object (a pure copy-in, copy-out), looked
up by (group, plural). Only the kinds listed here are defaulted so far; the rest are stored as
sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from k8py.api.jsondoc import clone
from k8py.api.resources import Resource
from k8py.api.timestamps import now

Obj = dict[str, Any]


def _secret(obj: Obj) -> Obj:
    # stringData is a write-only convenience: merged into data, base64-encoded, then dropped.
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return obj


def _namespace(obj: Obj) -> Obj:
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {}) or {}
    labels["kubernetes.io/metadata.name"] = name
    obj["metadata"]["labels"] = labels
    spec = obj.setdefault("spec", {}) or {}
    spec.setdefault("finalizers", ["kubernetes"])
    obj["spec"] = spec
    status = obj.setdefault("status", {}) or {}
    status.setdefault("phase", "Active")
    obj["status"] = status
    return obj


def _crd(obj: Obj) -> Obj:
    # Upstream's apiextensions controllers accept the names and establish the CRD at once
    # when nothing conflicts; k8py does it on write, so clients never wait for it.
    spec = obj.get("spec") or {}
    status = obj.setdefault("status", {}) or {}
    status["acceptedNames"] = spec.get("names") or {}
    status["storedVersions"] = sorted(
        {v["name"] for v in spec.get("versions") or [] if v.get("storage")}
        | set(status.get("storedVersions") or []))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    for kind, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        conditions.setdefault(kind, {"type": kind, "status": "True", "reason": reason,
                                     "message": message, "lastTransitionTime": now()})
    status["conditions"] = list(conditions.values())
    obj["status"] = status
    return obj


DEFAULTERS: dict[tuple[str, str], Callable[[Obj], Obj]] = {
    ("", "secrets"): _secret,
    ("", "namespaces"): _namespace,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}

# Kinds whose metadata.generation counts spec changes (upstream's strategies set it for these).
GENERATION_TRACKED = frozenset({
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
    ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs"),
    ("", "replicationcontrollers"), ("policy", "poddisruptionbudgets"),
    ("networking.k8s.io", "networkpolicies"), ("networking.k8s.io", "ingresses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
})


def apply_defaults(resource: Resource, obj: Obj) -> Obj:
    defaulter = DEFAULTERS.get((resource.group, resource.plural))
    return defaulter(clone(obj)) if defaulter else obj


def tracks_generation(resource: Resource) -> bool:
    return resource.custom or (resource.group, resource.plural) in GENERATION_TRACKED
