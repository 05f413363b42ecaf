"""The garbage collector: deletes objects whose owners are gone, and carries out the
Foreground and Orphan propagation policies (upstream's pkg/controller/garbagecollector).

The graph. Every object of every watched resource is a `Node` keyed by uid, with its
ownerReferences (`owners`) and the nodes that name it as owner (`dependents`). A reference
to a uid not seen yet makes a *virtual* node for it (identity from the reference), which is
checked against the API server: if that object does not exist, the virtual node is dropped
and its dependents are looked at. The informers are the shared ones (one watch and one cache
per resource for all controllers); the graph keeps only identities and the reference lists
the cached objects already hold.

Two kinds of work on one queue, keyed `("delete", uid)` and `("orphan", uid)`:
- attempt to delete (upstream's attemptToDeleteItem): read the object *live*; if it waits for
  its dependents (deletionTimestamp + `foregroundDeletion`), remove that finalizer once no
  dependent with `blockOwnerDeletion: true` is left, else queue those dependents. Otherwise
  classify each ownerReference by a live GET of the owner (or a recent watch DELETE): solid,
  dangling (absent, or another uid), or waiting for its dependents' deletion. Any solid
  owner: patch away the dangling and waiting references. Else delete the object, with
  Foreground if an owner waits and the object has dependents of its own, else by the
  policy its own finalizers ask for (Background by default), with a uid precondition.
- attempt to orphan: strip the owner's uid from every dependent's ownerReferences, then
  remove the owner's `orphan` finalizer.
Writes carry the resourceVersion they were computed from; a Conflict retries the item.

A namespaced dependent's owner is looked up in the dependent's namespace (or cluster-wide
for cluster-scoped kinds); a cluster-scoped dependent naming a namespaced kind has a
dangling reference. Owners of kinds not in the built-in registry (custom resources) are
never treated as absent: their dependents are left alone.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from k8py.api import errors
from k8py.api.resources import BUILTIN, Resource
from k8py.server.controllers.base import Controller

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"

# Upstream ignores events; reviews are never stored.
IGNORED = {("", "events"), ("events.k8s.io", "events"),
           ("authorization.k8s.io", "selfsubjectaccessreviews")}
# one version per kind: the one it is stored in
WATCHED = tuple(r for r in BUILTIN if (r.group, r.plural) not in IGNORED and not r.converts
                and {"list", "watch", "delete", "patch"} <= set(r.verbs))
_BY_KIND = {(r.group, r.kind): r for r in WATCHED}

ABSENT_CACHE_SIZE = 500  # upstream's absentOwnerCache
VIRTUAL_RECHECK = 1.0    # seconds before a virtual node that exists is looked at again


def resource_for(api_version: str, kind: str) -> Resource | None:
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    return _BY_KIND.get((group, kind))


class Node:
    """One object (or, while `observed` is false, an owner only known from a reference)."""
    __slots__ = ("uid", "resource", "namespace", "name", "owners", "dependents", "observed",
                 "deleting_dependents")

    def __init__(self, uid: str, resource: Resource | None, namespace: str | None, name: str,
                 observed: bool):
        self.uid = uid
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.owners: list[dict[str, Any]] = []
        self.dependents: set[Node] = set()
        self.observed = observed
        self.deleting_dependents = False

    def blocks(self, owner_uid: str) -> bool:
        """Whether this dependent blocks the foreground deletion of `owner_uid`."""
        return any(ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion")
                   for ref in self.owners)

    def __repr__(self) -> str:
        kind = self.resource.kind if self.resource else "?"
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{kind} {where}{self.name} ({self.uid})"


def _waits_for(obj: dict[str, Any], finalizer: str) -> bool:
    metadata = obj["metadata"]
    return bool(metadata.get("deletionTimestamp")) and finalizer in (
        metadata.get("finalizers") or ())


class GarbageCollector(Controller):
    name = "garbagecollector"
    service_account = "generic-garbage-collector"
    workers = 4

    def setup(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.absent: collections.OrderedDict[tuple[str, str | None], None] = \
            collections.OrderedDict()
        for resource in WATCHED:
            self._watch(resource)

    def _watch(self, resource: Resource) -> None:
        informer = self.informer(resource)
        informer.add_handlers(lambda obj: self._observed(resource, None, obj),
                              lambda old, new: self._observed(resource, old, new),
                              self._deleted)

    # --- the graph (handlers: no I/O, only graph edits and queueing) -------------------------

    def _observed(self, resource: Resource, old: dict[str, Any] | None,
                  obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        uid = metadata["uid"]
        node = self.nodes.get(uid)
        if node is None:
            node = self.nodes[uid] = Node(uid, resource, metadata.get("namespace"),
                                          metadata["name"], True)
        elif not node.observed:  # a virtual node turns real: take the true identity
            node.observed = True
            node.resource, node.namespace, node.name = \
                resource, metadata.get("namespace"), metadata["name"]
        refs = metadata.get("ownerReferences") or []
        if refs != node.owners:
            self._set_owners(node, refs)
        if _waits_for(obj, ORPHAN) and (old is None or not _waits_for(old, ORPHAN)):
            self.enqueue(("orphan", uid))
        deleting = _waits_for(obj, FOREGROUND)
        if deleting and not node.deleting_dependents:
            for dependent in node.dependents:
                self.enqueue(("delete", dependent.uid))
            self.enqueue(("delete", uid))
        node.deleting_dependents = deleting

    def _set_owners(self, node: Node, refs: list[dict[str, Any]]) -> None:
        old = {ref.get("uid"): ref for ref in node.owners}
        new = {ref.get("uid"): ref for ref in refs}
        node.owners = refs
        for uid, ref in old.items():
            if new.get(uid) == ref:
                continue
            owner = self.nodes.get(uid)
            if owner is None:
                continue
            if uid not in new:
                owner.dependents.discard(node)
                self._drop_if_unused(owner)
            if owner.deleting_dependents:  # it may have lost a blocking dependent
                self.enqueue(("delete", uid))
        for uid, ref in new.items():
            if uid in old or not uid:
                continue
            resource = resource_for(ref.get("apiVersion", ""), ref.get("kind", ""))
            namespace = node.namespace if resource is None or resource.namespaced else None
            owner = self.nodes.get(uid)
            if owner is None:
                owner = self.nodes[uid] = Node(uid, resource, namespace, ref.get("name", ""),
                                               False)
                self.enqueue(("delete", uid))  # does it exist at all?
            elif owner.namespace != namespace and resource is not None:
                # That uid lives elsewhere (another namespace, or the reference of a
                # cluster-scoped object names a namespaced kind): for this dependent the
                # owner is absent. The live check in attempt-to-delete will say so.
                self.enqueue(("delete", node.uid))
            owner.dependents.add(node)

    def _drop_if_unused(self, node: Node) -> None:
        if not node.observed and not node.dependents:
            self.nodes.pop(node.uid, None)

    def _deleted(self, obj: dict[str, Any]) -> None:
        node = self.nodes.get(obj["metadata"]["uid"])
        if node is not None:
            self._forget(node)

    def _forget(self, node: Node) -> None:
        """`node` is gone (watch DELETE, or not found by a live read)."""
        self.nodes.pop(node.uid, None)
        if node.dependents:
            self._absent(node.uid, node.namespace)
            for dependent in node.dependents:
                self.enqueue(("delete", dependent.uid))
        for ref in node.owners:
            owner = self.nodes.get(ref.get("uid"))
            if owner is not None:
                owner.dependents.discard(node)
                if owner.deleting_dependents:
                    self.enqueue(("delete", owner.uid))  # maybe its last blocking dependent
                self._drop_if_unused(owner)

    def _absent(self, uid: str, namespace: str | None) -> None:
        self.absent[(uid, namespace)] = None
        self.absent.move_to_end((uid, namespace))
        while len(self.absent) > ABSENT_CACHE_SIZE:
            self.absent.popitem(last=False)

    # --- work ---------------------------------------------------------------------------------

    async def reconcile(self, key: tuple[str, str]) -> float | None:
        action, uid = key
        node = self.nodes.get(uid)
        if node is None or node.resource is None:
            return None
        if action == "orphan":
            await self._orphan_dependents(node)
            return None
        return await self._attempt_to_delete(node)

    async def _live(self, node: Node) -> dict[str, Any] | None:
        """The object as the API server has it now; None if absent or replaced."""
        try:
            obj = await self.client.get(node.resource, node.name, node.namespace)
        except errors.NotFound:
            return None
        return obj if obj["metadata"].get("uid") == node.uid else None

    async def _attempt_to_delete(self, node: Node) -> float | None:
        latest = await self._live(node)
        if latest is None:
            # Absent: a virtual node for a missing owner, or a delete the watch has not
            # shown yet. Either way it is gone: its dependents are looked at now.
            self._forget(node)
            return None
        if not node.observed:
            # It exists but its informer has not shown it yet: look again later.
            return VIRTUAL_RECHECK
        if _waits_for(latest, FOREGROUND):
            await self._process_deleting_dependents(node, latest)
            return None
        if latest["metadata"].get("deletionTimestamp"):
            return None  # on its way out; its dependents are handled when it is gone
        refs = latest["metadata"].get("ownerReferences") or []
        if not refs:
            return None
        solid, dangling, waiting = [], [], []
        for ref in refs:
            owner = await self._owner(node, ref)
            if owner is None:
                dangling.append(ref)
            elif owner is _UNKNOWN or not _waits_for(owner, FOREGROUND):
                solid.append(ref)
            else:
                waiting.append(ref)
        if solid:
            if dangling or waiting:
                gone = {ref.get("uid") for ref in dangling + waiting}
                log.debug("%s: removing references to %s from %s", self.name, gone, node)
                await self._patch_owners(node, latest, [r for r in refs
                                                        if r.get("uid") not in gone])
            return None
        if waiting and node.dependents:
            if any(d.deleting_dependents for d in node.dependents):
                # A dependent waits on this object while this object would wait on it:
                # stop blocking our owners so the cycle cannot deadlock (upstream does too).
                unblocked = [{**r, "blockOwnerDeletion": False} if r.get("blockOwnerDeletion")
                             else r for r in refs]
                latest = await self._patch_owners(node, latest, unblocked)
            policy = "Foreground"
        elif ORPHAN in (latest["metadata"].get("finalizers") or ()):
            policy = "Orphan"
        elif FOREGROUND in (latest["metadata"].get("finalizers") or ()):
            policy = "Foreground"
        else:
            policy = "Background"
        log.debug("%s: deleting %s (owners gone), propagation %s", self.name, node, policy)
        try:
            await self.client.delete(node.resource, node.name, node.namespace,
                                     propagation=policy, preconditions={"uid": node.uid})
        except errors.NotFound:
            pass
        return None

    async def _owner(self, node: Node, ref: dict[str, Any]) -> dict[str, Any] | object | None:
        """The owner a reference names, read live; None if it is absent (dangling);
        `_UNKNOWN` if its kind cannot be looked up here."""
        uid = ref.get("uid")
        resource = resource_for(ref.get("apiVersion", ""), ref.get("kind", ""))
        if resource is None:
            return _UNKNOWN
        if resource.namespaced and node.namespace is None:
            return None  # a cluster-scoped object cannot be owned by a namespaced one
        namespace = node.namespace if resource.namespaced else None
        if (uid, namespace) in self.absent:
            return None
        try:
            owner = await self.client.get(resource, ref.get("name", ""), namespace)
        except errors.NotFound:
            self._absent(uid, namespace)
            return None
        if owner["metadata"].get("uid") != uid:
            self._absent(uid, namespace)
            return None
        return owner

    async def _patch_owners(self, node: Node, latest: dict[str, Any],
                            refs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.client.patch(node.resource, node.name, {"metadata": {
            "ownerReferences": refs or None,
            "resourceVersion": latest["metadata"]["resourceVersion"]}}, node.namespace)

    async def _process_deleting_dependents(self, node: Node, latest: dict[str, Any]) -> None:
        blocking = [d for d in node.dependents if d.blocks(node.uid)]
        if not blocking:
            log.debug("%s: %s has no blocking dependents left", self.name, node)
            await self._remove_finalizer(node, latest, FOREGROUND)
            return
        for dependent in blocking:
            if not dependent.deleting_dependents:
                self.enqueue(("delete", dependent.uid))

    async def _orphan_dependents(self, node: Node) -> None:
        latest = await self._live(node)
        if latest is None or not _waits_for(latest, ORPHAN):
            return
        for dependent in list(node.dependents):
            if dependent.resource is None or not dependent.observed:
                continue
            current = await self._live(dependent)
            if current is None:
                continue
            refs = current["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != node.uid]
            if len(kept) != len(refs):
                try:
                    await self._patch_owners(dependent, current, kept)
                except errors.NotFound:
                    continue
        await self._remove_finalizer(node, latest, ORPHAN)

    async def _remove_finalizer(self, node: Node, latest: dict[str, Any],
                                finalizer: str) -> None:
        finalizers = latest["metadata"].get("finalizers") or []
        if finalizer not in finalizers:
            return
        try:
            await self.client.patch(node.resource, node.name, {"metadata": {
                "finalizers": [f for f in finalizers if f != finalizer],
                "resourceVersion": latest["metadata"]["resourceVersion"]}}, node.namespace)
        except errors.NotFound:
            pass


_UNKNOWN = object()
