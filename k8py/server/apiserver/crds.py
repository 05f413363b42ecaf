"""CustomResourceDefinitions: serving the resources they define.

The API server is the only writer of CRDs, so it keeps the registry in step at write time:
after a CRD is created or updated, the resources of its served versions are (re)registered
(discovery, REST and validation follow at once, since they all read the registry); before a
CRD is deleted, every object of its kind is deleted (upstream's `customresourcecleanup`
finalizer does the same), then its resources are unregistered. At start, the stored CRDs are
loaded (`load`).

Each custom resource carries its version's `openAPIV3Schema`: the REST layer prunes unknown
fields with it and validates against it (`k8py.api.structural`). CRD status (accepted names,
`Established`) is set on write by the CRD defaulter.
"""

from __future__ import annotations

import logging
from typing import Any

from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import apiservices
from k8py.server.apiserver.storage import ObjectStore

log = logging.getLogger(__name__)

CRD_GROUP, CRD_PLURAL = "apiextensions.k8s.io", "customresourcedefinitions"


def _is_crd(resource: Resource) -> bool:
    return resource.group == CRD_GROUP and resource.plural == CRD_PLURAL


async def after_write(registry: Registry, objects: ObjectStore, resource: Resource,
                      crd: dict[str, Any]) -> None:
    if _is_crd(resource):
        registry.sync_crd(crd, crd["metadata"]["name"])
        await apiservices.crd_written(objects, registry, crd)


async def before_delete(registry: Registry, objects: ObjectStore, resource: Resource,
                        crd: dict[str, Any]) -> None:
    if not _is_crd(resource):
        return
    name = crd["metadata"]["name"]
    served = registry.crd_resources(name)
    if not served:
        return
    # All versions share one storage prefix (group + plural): one pass deletes everything.
    kind = served[0]
    items, _, _ = await objects.list(kind, None)
    for item in items:
        meta = item["metadata"]
        try:
            await objects.delete(kind, meta.get("namespace"), meta["name"])
        except Exception as exc:  # gone meanwhile: fine; anything else is logged
            log.debug("deleting %s %s with its CRD: %s", kind.plural, meta["name"], exc)
    log.info("deleted %d %s with their CRD %s", len(items), kind.plural, name)


async def after_delete(registry: Registry, objects: ObjectStore, resource: Resource,
                       crd: dict[str, Any]) -> None:
    if _is_crd(resource):
        registry.sync_crd(None, crd["metadata"]["name"])
        await apiservices.crd_deleted(objects, registry, crd)


async def load(registry: Registry, objects: ObjectStore) -> list[dict[str, Any]]:
    """Serve every stored CRD (at start); returns them."""
    resource = registry.get(CRD_GROUP, "v1", CRD_PLURAL)
    items, _, _ = await objects.list(resource, None)
    for crd in items:
        registry.sync_crd(crd, crd["metadata"]["name"])
    if items:
        log.info("serving %d custom resource definitions", len(items))
    return items
