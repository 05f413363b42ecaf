"""The `scale` subresource: an autoscaling/v1 `Scale` view of a workload's replicas.

GET answers a Scale built from the parent (deployments, replicasets, statefulsets,
replicationcontrollers): `spec.replicas` from the parent's spec, `status.replicas` and
`status.selector` (the label selector as a string, as upstream) from its status and spec, and
the parent's name, uid and resourceVersion. PUT and PATCH (merge, JSON, strategic) change
only the parent's `spec.replicas`, with compare-and-swap on the parent's resourceVersion, so
`kubectl scale` never overwrites a concurrent change to anything else. The manager that
scales owns `spec.replicas` afterwards (managedFields, subresource `scale`), so a later
server-side apply of a different replica count conflicts with it, as upstream.
"""

from __future__ import annotations

from typing import Any

from k8py.api import apply, errors, meta, schemas
from k8py.api.resources import Resource
from k8py.api.selectors import format_label_selector
from k8py.server.apiserver import patches
from k8py.server.apiserver.storage import ObjectStore, guaranteed, parse_resource_version

SCALE_SCHEMA = ("autoscaling", "v1", "Scale")


def to_scale(parent: dict[str, Any]) -> dict[str, Any]:
    metadata = parent["metadata"]
    spec = parent.get("spec") or {}
    selector = spec.get("selector") or {}
    if isinstance(selector, dict) and "matchLabels" not in selector and \
            "matchExpressions" not in selector:  # a replicationcontroller's plain map
        selector = {"matchLabels": selector}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: metadata[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in metadata},
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {"replicas": (parent.get("status") or {}).get("replicas", 0),
                   "selector": format_label_selector(selector)},
    }


def _replicas(scale: Any) -> int:
    if not isinstance(scale, dict) or not isinstance(scale.get("spec", {}), dict):
        raise errors.BadRequest("the body must be an autoscaling/v1 Scale")
    replicas = scale.get("spec", {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid("Scale", (scale.get("metadata") or {}).get("name", ""), [
            ("spec.replicas", "FieldValueInvalid",
             f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
            "autoscaling")
    return replicas


async def get(objects: ObjectStore, resource: Resource, namespace: str | None,
              name: str) -> dict[str, Any]:
    return to_scale(await objects.get(resource, namespace, name))


async def update(objects: ObjectStore, resource: Resource, namespace: str | None, name: str,
                 body: Any, *, manager: str, media_type: str | None = None,
                 dry_run: bool = False) -> dict[str, Any]:
    """Replace (media_type None) or patch the Scale; returns the new Scale. Retried while
    others write the object meanwhile (its controller writes status), unless the Scale
    pinned a resourceVersion."""
    return await guaranteed(lambda: _update_once(objects, resource, namespace, name, body,
                                                 manager, media_type, dry_run))


async def _update_once(objects: ObjectStore, resource: Resource, namespace: str | None,
                       name: str, body: Any, manager: str, media_type: str | None,
                       dry_run: bool) -> dict[str, Any]:
    parent = await objects.get(resource, namespace, name)
    current = to_scale(parent)
    if media_type is None:
        scale = body
    else:
        scale = patches.apply_patch(media_type, current, body, schemas.for_kind(*SCALE_SCHEMA))
    wanted = parse_resource_version(((scale or {}).get("metadata") or {}).get("resourceVersion")
                                    if isinstance(scale, dict) else None)
    if wanted and str(wanted) != parent["metadata"]["resourceVersion"]:
        raise errors.conflict(resource.plural, name, resource.group)
    replicas = _replicas(scale)
    if replicas == current["spec"]["replicas"] or dry_run:
        return {**current, "spec": {"replicas": replicas}}
    changed = {**parent, "spec": {**(parent.get("spec") or {}), "replicas": replicas}}
    new = meta.prepare_update(resource, changed, parent)
    if "status" in parent:
        new["status"] = parent["status"]
    new = apply.record_update(parent, new, manager, resource.api_version,
                              schemas.for_resource(resource),
                              "scale")
    stored = await objects.update(resource, new, int(parent["metadata"]["resourceVersion"]))
    return to_scale(stored)
