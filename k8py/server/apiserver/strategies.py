"""Per-kind strategies: what is specific to a kind on the write path, in one object per kind
(upstream's registry strategies, pkg/registry/<group>/<kind>/strategy.go and storage.go).

`GenericStore` (the write path) is the same for every resource; wherever kinds differ it
asks the resource's `Strategy`:
- `prepare_create` / `prepare_update`: the body before the generic preparation (a CSR's
  requester from the authenticated user; a Service's allocated ClusterIPs and NodePorts
  carried over; a pod's ephemeral containers, which only pods/ephemeralcontainers changes);
- `written_fields`: after preparation, what this write may not change is put back (the
  main resource never changes status; /status changes only status; a CSR's /approval only
  its conditions; a namespace's /finalize only spec.finalizers);
- `store_create` / `store_update` / `after_delete`: allocation around the store write, with
  rollback when the write fails (Service ClusterIPs and NodePorts, `serviceips`);
- `after_write` / `before_delete`: hooks (a CRD written registers its resources; deleted, it
  takes its objects with it);
- `grace_period`, `pending_finalizers`, `mark_deleting`: how deletion waits (pods bound to a
  node stop gracefully; a namespace waits for its contents and turns Terminating);
- `returns_deleted_object`, `ttl`: what DELETE answers; how long objects live (Events);
- `answer`: kinds that are answered, never stored (the reviews).

A kind's defaults, validation and initial status are pure functions of the object in
`k8py.api` (`defaults`, `validation`, `meta.INITIAL_STATUS`), shared with clients and tests;
`meta.prepare_create`/`prepare_update` apply them for every kind, as upstream's
rest.BeforeCreate/BeforeUpdate call the strategy's PrepareFor*, Validate and Canonicalize.

`Strategies.for_resource` finds a resource's strategy by (group, plural); kinds without one
(custom resources among them) get the plain `Strategy`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import crds, queryparams, reviews, serviceips
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.storage import ObjectStore

Obj = dict[str, Any]
Write = Callable[[Obj], Awaitable[Obj]]


def _without_version(metadata: Obj) -> Obj:
    return {k: v for k, v in metadata.items() if k != "resourceVersion"}


class Strategy:
    """The plain kind: stored as sent (after the generic preparation), deleted at once."""

    returns_deleted_object = False
    ttl: float | None = None  # seconds objects live in the store (None: for ever)
    answers = False  # answered, never stored (see `answer`)

    def __init__(self, returns_deleted_object: bool = False, ttl: float | None = None):
        self.returns_deleted_object = returns_deleted_object
        self.ttl = ttl

    # --- create and update ---------------------------------------------------------------

    def prepare_create(self, resource: Resource, body: Obj, user: User | None) -> Obj:
        return body

    def prepare_update(self, resource: Resource, body: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        return body

    def written_fields(self, resource: Resource, new: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        """`new` with what this write may not change put back from `current`: for kinds
        with a status subresource, the main resource keeps status and /status writes only
        status (upstream's PrepareForUpdate and the status strategies)."""
        if "status" not in resource.subresources:
            return new
        if subresource == "status":
            return self._with_status(current, new.get("status"))
        if "status" in current:
            return {**new, "status": current["status"]}
        return {k: v for k, v in new.items() if k != "status"}

    @staticmethod
    def _with_status(current: Obj, status: Any) -> Obj:
        """current, with only its status replaced (None: without one)."""
        changed = {k: v for k, v in current.items() if k != "status"}
        if status is not None:
            changed["status"] = status
        changed["metadata"] = _without_version(current["metadata"])
        return changed

    async def store_create(self, resource: Resource, obj: Obj, write: Write,
                           dry_run: bool) -> Obj:
        return obj if dry_run else await write(obj)

    async def store_update(self, resource: Resource, new: Obj, current: Obj,
                           write: Write | None, dry_run: bool) -> Obj:
        return new if dry_run else await write(new)

    async def after_write(self, resource: Resource, obj: Obj) -> None:
        pass

    # --- delete ----------------------------------------------------------------------------

    def grace_period(self, obj: Obj, options: Obj) -> int:
        """Seconds the object gets to stop before it is removed (0: remove at once)."""
        return 0

    def pending_finalizers(self, obj: Obj) -> bool:
        """Whether something must still finish before a deleted object may go."""
        return bool(obj["metadata"].get("finalizers"))

    def mark_deleting(self, marked: Obj) -> Obj:
        """The object as marked for a deletion that waits."""
        return marked

    async def before_delete(self, resource: Resource, obj: Obj) -> None:
        pass

    async def after_delete(self, resource: Resource, obj: Obj) -> None:
        pass

    # --- answered, not stored --------------------------------------------------------------

    async def answer(self, resource: Resource, body: Any, user: User | None,
                     namespace: str | None) -> Obj:
        raise errors.MethodNotAllowed(f"{resource.plural} are stored, not answered")


class PodStrategy(Strategy):
    """Pods: a pod bound to a node is deleted gracefully (its kubelet finishes it); ephemeral
    containers change only through pods/ephemeralcontainers."""

    def __init__(self):
        super().__init__(returns_deleted_object=True)

    def prepare_update(self, resource: Resource, body: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        """upstream's dropNonEphemeralContainerUpdates: /ephemeralcontainers changes only
        spec.ephemeralContainers (the rest comes from `current`); the main resource keeps
        them as they are."""
        if subresource not in (None, "ephemeralcontainers"):
            return body
        source, given = (current, body) if subresource else (body, current)
        spec = {k: v for k, v in (source.get("spec") or {}).items()
                if k != "ephemeralContainers"}
        ephemeral = (given.get("spec") or {}).get("ephemeralContainers")
        if ephemeral:
            spec["ephemeralContainers"] = ephemeral
        if subresource is None:
            return {**body, "spec": spec}
        metadata = dict(current["metadata"])
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted:
            metadata["resourceVersion"] = wanted
        return {**current, "metadata": metadata, "spec": spec}

    def grace_period(self, obj: Obj, options: Obj) -> int:
        """upstream's pod strategy CheckGracefulDelete: a pod on a node that has not finished
        gets the request's grace period, or its terminationGracePeriodSeconds."""
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        value = options.get("gracePeriodSeconds")
        if value is None:
            value = spec.get("terminationGracePeriodSeconds", 30)
        return max(queryparams.parse_int64(value, "gracePeriodSeconds"), 0)


class NamespaceStrategy(Strategy):
    """Namespaces: deletion waits for spec.finalizers (their contents' deletion clears it,
    through /finalize) and shows phase Terminating meanwhile."""

    def __init__(self):
        super().__init__(returns_deleted_object=True)

    def written_fields(self, resource: Resource, new: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        new = super().written_fields(resource, new, current, subresource)
        if subresource == "finalize":  # only spec.finalizers changes
            finalizers = (new.get("spec") or {}).get("finalizers") or []
            return {**current, "metadata": _without_version(current["metadata"]),
                    "spec": {**(current.get("spec") or {}), "finalizers": finalizers}}
        if "finalizers" in (current.get("spec") or {}):
            new.setdefault("spec", {})["finalizers"] = current["spec"]["finalizers"]
        return new

    def pending_finalizers(self, obj: Obj) -> bool:
        return super().pending_finalizers(obj) or bool(
            (obj.get("spec") or {}).get("finalizers"))

    def mark_deleting(self, marked: Obj) -> Obj:
        return {**marked, "status": {**(marked.get("status") or {}), "phase": "Terminating"}}


class ServiceStrategy(Strategy):
    """Services: ClusterIPs and NodePorts allocated as they are written (`serviceips`),
    given back when they are removed."""

    def __init__(self, service_ips: serviceips.ServiceIPs):
        super().__init__(returns_deleted_object=True)
        self.service_ips = service_ips

    def prepare_update(self, resource: Resource, body: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        return self.service_ips.carry_over(resource, body, current)

    async def store_create(self, resource: Resource, obj: Obj, write: Write,
                           dry_run: bool) -> Obj:
        return await self.service_ips.create(resource, obj, write, dry_run=dry_run)

    async def store_update(self, resource: Resource, new: Obj, current: Obj,
                           write: Write | None, dry_run: bool) -> Obj:
        return await self.service_ips.update(resource, new, current, write, dry_run=dry_run)

    async def after_delete(self, resource: Resource, obj: Obj) -> None:
        await self.service_ips.deleted(resource, obj)


class CertificateSigningRequestStrategy(Strategy):
    """CSRs: the requester is whoever is authenticated, whatever the body says; /approval
    changes only the conditions (approve, deny)."""

    def prepare_create(self, resource: Resource, body: Obj, user: User | None) -> Obj:
        spec = dict(body["spec"]) if isinstance(body.get("spec"), dict) else {}
        for field in ("username", "uid", "groups", "extra"):
            spec.pop(field, None)
        if user is not None:
            spec.update(user.info())
        return {**body, "spec": spec}

    def written_fields(self, resource: Resource, new: Obj, current: Obj,
                       subresource: str | None) -> Obj:
        if subresource == "approval":
            conditions = (new.get("status") or {}).get("conditions")
            return self._with_status(current, {**(current.get("status") or {}),
                                               "conditions": conditions})
        return super().written_fields(resource, new, current, subresource)


class CustomResourceDefinitionStrategy(Strategy):
    """CRDs: the API server serves what they define from the moment they are written, and
    deleting one deletes its objects first (`crds`)."""

    def __init__(self, registry: Registry, objects: ObjectStore):
        super().__init__()
        self.registry, self.objects = registry, objects

    async def after_write(self, resource: Resource, obj: Obj) -> None:
        await crds.after_write(self.registry, self.objects, resource, obj)

    async def before_delete(self, resource: Resource, obj: Obj) -> None:
        await crds.before_delete(self.registry, self.objects, resource, obj)

    async def after_delete(self, resource: Resource, obj: Obj) -> None:
        await crds.after_delete(self.registry, self.objects, resource, obj)


class ReviewStrategy(Strategy):
    """Access, rules, token and self reviews: answered, never stored (`reviews`)."""

    answers = True

    def __init__(self, token_reviewer: reviews.TokenReviewer):
        super().__init__()
        self.token_reviewer = token_reviewer
        self.access_reviewer: reviews.AccessReviewer = reviews.ALLOW_EVERYTHING

    async def answer(self, resource: Resource, body: Any, user: User | None,
                     namespace: str | None) -> Obj:
        return await reviews.answer(resource, body, user, namespace, self.token_reviewer,
                                    self.access_reviewer)


# Events expire (upstream's --event-ttl default): the store deletes them after this long.
EVENT_TTL = 3600.0

# Kinds whose DELETE answers with the deleted object, not a Status (upstream's stores with
# ReturnDeletedObject: pkg/registry/*/*/storage/storage.go); typed clients decode it so.
# Pods, Services and Namespaces have their own strategies, which say so too.
RETURNS_DELETED_OBJECT = (
    ("", "serviceaccounts"), ("", "persistentvolumes"), ("", "persistentvolumeclaims"),
    ("", "resourcequotas"), ("", "podtemplates"), ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
)


async def _no_tokens(token: str, audiences: list[str] | None) -> tuple[User | None, list[str]]:
    """A token reviewer that knows no token (for a store without an API server's tokens)."""
    return None, []


class Strategies:
    """Every kind's strategy, by (group, plural)."""

    def __init__(self, registry: Registry, objects: ObjectStore,
                 service_ips: serviceips.ServiceIPs,
                 token_reviewer: reviews.TokenReviewer | None = None):
        self._plain = Strategy()
        self._by_kind: dict[tuple[str, str], Strategy] = {
            ("", "pods"): PodStrategy(),
            ("", "namespaces"): NamespaceStrategy(),
            ("", "services"): ServiceStrategy(service_ips),
            ("", "events"): Strategy(ttl=EVENT_TTL),
            ("events.k8s.io", "events"): Strategy(ttl=EVENT_TTL),
            ("certificates.k8s.io", "certificatesigningrequests"):
                CertificateSigningRequestStrategy(),
            (crds.CRD_GROUP, crds.CRD_PLURAL): CustomResourceDefinitionStrategy(registry,
                                                                              objects),
            **{kind: Strategy(returns_deleted_object=True) for kind in RETURNS_DELETED_OBJECT},
            **{kind: ReviewStrategy(token_reviewer or _no_tokens) for kind in reviews.REVIEWS},
        }

    def use_access_reviewer(self, reviewer: reviews.AccessReviewer) -> None:
        """Access and rules reviews answered by `reviewer` (the server's authorizers)."""
        for strategy in self._by_kind.values():
            if isinstance(strategy, ReviewStrategy):
                strategy.access_reviewer = reviewer

    def for_resource(self, resource: Resource) -> Strategy:
        if resource.custom:
            return self._plain
        return self._by_kind.get((resource.group, resource.plural), self._plain)


def deletion_mark(strategy: Strategy, obj: Obj, policy: str) -> Obj | None:
    """The object as a delete leaves it when deletion must wait: with `deletionTimestamp`,
    the finalizer the propagation policy asks for (the garbage collector's `orphan` or
    `foregroundDeletion`), and what the kind shows meanwhile. None: delete it now."""
    metadata = obj["metadata"]
    finalizers = list(metadata.get("finalizers") or [])
    wanted = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
    if wanted and wanted not in finalizers:
        if metadata.get("deletionTimestamp") is None or wanted == "orphan":
            finalizers.append(wanted)
    candidate = {**obj, "metadata": {**metadata, "finalizers": finalizers}}
    if not strategy.pending_finalizers(candidate):
        return None
    if metadata.get("deletionTimestamp") and finalizers == list(metadata.get("finalizers") or []):
        return obj
    new_meta = {**metadata, "finalizers": finalizers}
    new_meta.setdefault("deletionTimestamp", timestamps.now())
    new_meta.setdefault("deletionGracePeriodSeconds", 0)
    if not finalizers:
        new_meta.pop("finalizers")
    return strategy.mark_deleting({**obj, "metadata": new_meta})
