"""APIServices for the group-versions this server serves itself, as kube-aggregator's
autoregister controller writes them: one `<version>.<group>` object each (`v1.` for the core
group), `spec.service` unset (served locally), condition Available=True reason Local, with
upstream's group and version priorities (which order `kubectl api-versions` and discovery
clients' preferences). Built-in group-versions are written at start (`ensure`, label
`kube-aggregator.kubernetes.io/automanaged: onstart`); those of CustomResourceDefinitions
when the CRD is written (label `true`), and removed with the last CRD of the group-version.
k8py has no aggregation: APIServices that name a service are stored, not proxied to.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, meta, timestamps
from k8py.api.resources import Registry
from k8py.server.apiserver.storage import ObjectStore

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"

# kube-apiserver's defaults (group priority minimum, version priority); others get 1000, 100
PRIORITIES = {
    ("", "v1"): (18000, 1),
    ("apiregistration.k8s.io", "v1"): (18000, 15),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("autoscaling", "v1"): (17500, 15),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("metrics.k8s.io", "v1beta1"): (100, 100),  # metrics-server's manifest
}


def name_of(group: str, version: str) -> str:
    return f"{version}.{group}"


def local(group: str, version: str, managed: str) -> dict[str, Any]:
    """The APIService of a group-version served here."""
    group_priority, version_priority = PRIORITIES.get((group, version), (1000, 100))
    return {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name_of(group, version), "labels": {AUTOMANAGED: managed}},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": group_priority,
                 "versionPriority": version_priority},
        "status": {"conditions": [{
            "type": "Available", "status": "True", "lastTransitionTime": timestamps.now(),
            "reason": "Local", "message": "Local APIServices are always available"}]},
    }


async def ensure(objects: ObjectStore, registry: Registry, group: str, version: str,
                 managed: str) -> None:
    """Store the group-version's APIService unless there is one."""
    apiservices = registry.get("apiregistration.k8s.io", "v1", "apiservices")
    try:
        await objects.get(apiservices, None, name_of(group, version))
    except errors.NotFound:
        obj = local(group, version, managed)
        status = obj.pop("status")
        created = meta.prepare_create(apiservices, obj, None)
        created["status"] = status
        try:
            await objects.create(apiservices, created)
        except errors.AlreadyExists:
            pass


async def ensure_builtin(objects: ObjectStore, registry: Registry) -> None:
    for group, versions in registry.groups().items():
        for version in versions:
            if all(not r.custom for r in registry.in_group_version(group, version)):
                await ensure(objects, registry, group, version, "onstart")


async def crd_written(objects: ObjectStore, registry: Registry, crd: dict[str, Any]) -> None:
    """After a CRD write: every group-version it serves has its APIService."""
    spec = crd.get("spec") or {}
    for version in spec.get("versions") or []:
        if version.get("served", True) and spec.get("group"):
            await ensure(objects, registry, spec["group"], version["name"], "true")


async def remove(objects: ObjectStore, registry: Registry, group: str, version: str) -> None:
    """The group-version's APIService gone, if there was one."""
    apiservices = registry.get("apiregistration.k8s.io", "v1", "apiservices")
    try:
        await objects.delete(apiservices, None, name_of(group, version))
    except errors.NotFound:
        pass


async def crd_deleted(objects: ObjectStore, registry: Registry, crd: dict[str, Any]) -> None:
    """After a CRD is gone: APIServices of group-versions nothing serves any more go."""
    spec = crd.get("spec") or {}
    for version in spec.get("versions") or []:
        group, name = spec.get("group", ""), version.get("name", "")
        if group and not registry.has_group_version(group, name):
            await remove(objects, registry, group, name)
