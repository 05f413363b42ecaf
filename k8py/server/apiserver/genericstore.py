"""The write path, the same for every resource (upstream's generic registry Store):

    request (rest: parsed, authenticated, decoded strictly)
      -> admission: mutating plugins (`admission.Chain.admit`)
      -> the kind's strategy and the generic preparation (`strategies`, `meta.prepare_*`:
         defaults, identity, generation, initial status, validation; managedFields)
      -> admission: validating plugins (`admission.Chain.validate`)
      -> the store (`storage.ObjectStore`: compare-and-swap), with the strategy's
         allocation around it (ClusterIPs) and its hooks after it (CRDs)
      -> watchers (`storage.ObjectWatch`, `watchserving`)

Updates are read-modify-write loops (`update`): the change is computed from the object as
read, and redone on a fresh read when another writer got in between (`storage.guaranteed`,
upstream's GuaranteedUpdate), so only a resourceVersion the client pinned makes a 409.

Deletion: a kind's strategy says whether it waits (a pod's grace period, finalizers, a
namespace's contents); a waiting deletion marks the object (`deletionTimestamp`, the
propagation policy's finalizer) and the last finalizer's removal deletes it for good.
`dry_run` runs every step but the store's write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from k8py.api import apply, errors, meta, schemas, timestamps
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import admission, storage
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.apiserver.strategies import Strategies, deletion_mark

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class WriteContext:
    """Who writes, how: the user, the field manager, dry run, the subresource written."""
    user: User | None
    manager: str
    dry_run: bool = False
    subresource: str | None = None


def propagation(options: Obj) -> str:
    """Background, Foreground or Orphan: how a delete treats the object's dependents."""
    if options.get("propagationPolicy"):
        return options["propagationPolicy"]
    return "Orphan" if options.get("orphanDependents") is True else "Background"


class GenericStore:
    def __init__(self, registry: Registry, objects: ObjectStore, strategies: Strategies,
                 chain: admission.Chain | None = None):
        self.registry = registry
        self.objects = objects
        self.strategies = strategies
        self.admission = chain or admission.default_chain(objects)

    async def _admit(self, operation: str, resource: Resource, namespace: str | None,
                     name: str | None, obj: Obj | None, old: Obj | None,
                     ctx: WriteContext) -> Obj | None:
        return await self.admission.admit(admission.Attributes(
            operation, resource, ctx.subresource, namespace, name, obj, old, ctx.user,
            ctx.dry_run))

    async def _validate(self, operation: str, resource: Resource, namespace: str | None,
                        name: str | None, obj: Obj | None, old: Obj | None,
                        ctx: WriteContext) -> None:
        await self.admission.validate(admission.Attributes(
            operation, resource, ctx.subresource, namespace, name, obj, old, ctx.user,
            ctx.dry_run))

    async def admit_subresource(self, operation: str, resource: Resource,
                                namespace: str | None, name: str | None, obj: Obj | None,
                                ctx: WriteContext) -> Obj | None:
        """Both admission phases for a subresource whose own code writes (binding,
        eviction, scale): what the mutating plugins made of `obj`."""
        obj = await self._admit(operation, resource, namespace, name, obj, None, ctx)
        await self._validate(operation, resource, namespace, name, obj, None, ctx)
        return obj

    # --- create -------------------------------------------------------------------------

    async def answer(self, resource: Resource, namespace: str | None, body: Any,
                     ctx: WriteContext) -> Obj | None:
        """A kind answered, never stored (the reviews): its answer; None for stored kinds."""
        strategy = self.strategies.for_resource(resource)
        if not strategy.answers:
            return None
        await self._admit(admission.CREATE, resource, namespace, None, body, None, ctx)
        return await strategy.answer(resource, body, ctx.user, namespace)

    async def create(self, resource: Resource, namespace: str | None, body: Any,
                     ctx: WriteContext, managed_fields: list | None = None) -> Obj:
        """Store a new object; `managed_fields` (server-side apply) replaces the create's
        own managedFields entry when given."""
        strategy = self.strategies.for_resource(resource)
        if isinstance(body, dict):
            body = strategy.prepare_create(resource, body, ctx.user)
            name = (body.get("metadata") or {}).get("name") \
                if isinstance(body.get("metadata"), dict) else None
            body = await self._admit(admission.CREATE, resource, namespace, name, body, None,
                                     ctx)
        obj = meta.prepare_create(resource, body, namespace)
        if managed_fields is None:
            obj = apply.record_update(None, obj, ctx.manager, resource.api_version,
                                      schemas.for_resource(resource))
        elif managed_fields:
            obj["metadata"]["managedFields"] = managed_fields
        if resource.namespaced:
            await self.require_namespace(obj["metadata"]["namespace"])
        await self._validate(admission.CREATE, resource, obj["metadata"].get("namespace"),
                             obj["metadata"]["name"], obj, None, ctx)
        created = await strategy.store_create(
            resource, obj, lambda o: self.objects.create(resource, o, ttl=strategy.ttl),
            ctx.dry_run)
        if not ctx.dry_run:
            await strategy.after_write(resource, created)
        return created

    async def require_namespace(self, namespace: str) -> None:
        """Refuse content for a namespace that does not exist or is being deleted."""
        namespaces = self.registry.get("", "v1", "namespaces")
        try:
            current = await self.objects.get(namespaces, None, namespace)
        except errors.NotFound:
            raise errors.NotFound(f'namespaces "{namespace}" not found', name=namespace,
                                  kind="namespaces") from None
        if current["metadata"].get("deletionTimestamp"):
            raise errors.Forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated")

    # --- update -------------------------------------------------------------------------

    async def update(self, resource: Resource, namespace: str | None, name: str,
                     change: Callable[[Obj], Awaitable[Obj]], ctx: WriteContext,
                     applied: bool = False) -> Obj:
        """Read, change, write; when another writer got in between, read again and redo the
        change. A change that pins the resourceVersion it applies to raises the plain
        Conflict itself once the object has moved on. `applied`: the change is a
        server-side apply, whose managedFields stand as computed."""
        async def step() -> Obj:
            current = await self.objects.get(resource, namespace, name)
            new = await change(current)
            return await self._write_update(resource, namespace, name, new, current, ctx,
                                            applied)

        return await storage.guaranteed(step)

    async def _write_update(self, resource: Resource, namespace: str | None, name: str,
                            body: Obj, current: Obj, ctx: WriteContext, applied: bool) -> Obj:
        strategy = self.strategies.for_resource(resource)
        body = strategy.prepare_update(resource, body, current, ctx.subresource)
        body = await self._admit(admission.UPDATE, resource, namespace, name, body, current,
                                 ctx)
        new = meta.prepare_update(resource, body, current)
        if applied:
            new["metadata"]["managedFields"] = body["metadata"].get("managedFields", [])
        else:
            new = apply.record_update(current, new, ctx.manager, resource.api_version,
                                      schemas.for_resource(resource), ctx.subresource or "")
        new = strategy.written_fields(resource, new, current, ctx.subresource)
        await self._validate(admission.UPDATE, resource, namespace, name, new, current, ctx)
        revision = int(current["metadata"]["resourceVersion"])
        if ctx.dry_run:
            new = await strategy.store_update(resource, new, current, None, dry_run=True)
            return {**new, "metadata": {**new["metadata"], "resourceVersion": str(revision)}}
        if new["metadata"].get("deletionTimestamp") and not strategy.pending_finalizers(new):
            return await self.remove(resource, namespace, name, revision)
        unchanged = {**current, "metadata": {k: v for k, v in current["metadata"].items()
                                              if k != "resourceVersion"}}
        if new == unchanged:
            return current
        updated = await strategy.store_update(
            resource, new, current,
            lambda o: self.objects.update(resource, o, revision, ttl=strategy.ttl), False)
        await strategy.after_write(resource, updated)
        return updated

    # --- delete -------------------------------------------------------------------------

    async def remove(self, resource: Resource, namespace: str | None, name: str,
                     revision: int) -> Obj:
        """Delete an object for good (its finalizers are done)."""
        strategy = self.strategies.for_resource(resource)
        current = await self.objects.get(resource, namespace, name)
        await strategy.before_delete(resource, current)
        deleted = await self.objects.delete(resource, namespace, name, revision)
        await strategy.after_delete(resource, deleted)
        return deleted

    async def delete(self, resource: Resource, namespace: str | None, name: str,
                     options: Obj, ctx: WriteContext) -> tuple[Obj, int]:
        """Delete, or mark for deletion, as (answer, HTTP status); retried while other
        writers change the object meanwhile (a controller writing status), so only a
        precondition the client sent can make it a 409."""
        return await storage.guaranteed(
            lambda: self._delete_once(resource, namespace, name, options, ctx))

    async def _delete_once(self, resource: Resource, namespace: str | None, name: str,
                           options: Obj, ctx: WriteContext) -> tuple[Obj, int]:
        strategy = self.strategies.for_resource(resource)
        current = await self.objects.get(resource, namespace, name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"]["uid"]:
            raise errors.Conflict(
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                f"object meta: {current['metadata']['uid']}")
        if preconditions.get("resourceVersion") and (
                preconditions["resourceVersion"] != current["metadata"]["resourceVersion"]):
            raise errors.conflict(resource.plural, name, resource.group)
        await self._admit(admission.DELETE, resource, namespace, name, None, current, ctx)
        await self._validate(admission.DELETE, resource, namespace, name, None, current, ctx)
        revision = int(current["metadata"]["resourceVersion"])
        grace = strategy.grace_period(current, options)
        if grace:
            # marked now, removed by whoever finishes it (a pod's kubelet, once its
            # containers have stopped)
            existing = current["metadata"].get("deletionGracePeriodSeconds")
            if existing is not None and existing <= grace:
                return current, 200
            marked = {**current, "metadata": {**current["metadata"],
                                              "deletionTimestamp": timestamps.after(grace),
                                              "deletionGracePeriodSeconds": grace}}
            if ctx.dry_run:
                return marked, 200
            return await self.objects.update(resource, marked, revision), 200
        marked = deletion_mark(strategy, current, propagation(options))
        if marked is not None:
            # upstream answers 202 for a deletion that waits only when the request set the
            # deprecated orphanDependents: false; otherwise 200, with the object
            code = 202 if options.get("orphanDependents") is False else 200
            if marked == current or ctx.dry_run:
                return marked, code
            return await self.objects.update(resource, marked, revision), code
        if ctx.dry_run:
            return current, 200
        deleted = await self.remove(resource, namespace, name, revision)
        if strategy.returns_deleted_object:
            return deleted, 200
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": resource.group, "kind": resource.plural,
                        "uid": current["metadata"]["uid"]},
        }, 200

    async def delete_collection(self, resource: Resource, namespace: str | None,
                                matches, options: Obj, ctx: WriteContext) -> Obj:
        """Each matching object deleted as a DELETE of it would be (grace periods,
        finalizers, propagation); one that is gone meanwhile is skipped, as upstream."""
        items, revision, _ = await self.objects.list(resource, namespace, matches=matches)
        deleted = []
        for item in items:
            metadata = item["metadata"]
            try:
                result, _ = await self.delete(resource, metadata.get("namespace"),
                                              metadata["name"], options, ctx)
            except errors.NotFound:
                continue
            deleted.append(item if result.get("kind") == "Status" else result)
        return {
            "kind": resource.list_kind,
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": deleted,
        }
