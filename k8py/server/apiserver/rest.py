"""The REST verbs on resources: get, list, watch, create, update, patch, delete,
deletecollection, for every resource in the registry, namespaced or cluster-scoped.

URL shapes (upstream's):
    /api/v1/<plural>[/<name>[/<subresource>]]                          cluster scope, or
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<subresource>]]          namespaced
    /apis/<group>/<version>/...                                        the same for groups
A namespaced plural without a namespace lists or watches across all namespaces.

Semantics follow upstream's generic registry:
- update needs the object's current resourceVersion when it carries one (409 otherwise); an
  update that changes nothing writes nothing;
- for kinds with a `status` subresource, the main resource ignores status changes and the
  `status` subresource changes only status;
- delete of an object with finalizers sets `deletionTimestamp` and keeps it; an update that
  removes the last finalizer of such an object deletes it; a pod bound to a node is deleted
  gracefully (`deletionTimestamp` = now + grace period, default its
  terminationGracePeriodSeconds), for its kubelet to finish; an unbound one at once;
- Events are written with a one-hour time-to-live, after which the store deletes them;
- Services get their ClusterIPs and NodePorts as they are written, and give them back when
  deleted (`serviceips`); a dry run shows what they would get;
- `dryRun=All` runs every check and writes nothing;
- fields the upstream schema of a built-in kind does not know are dropped, as upstream's typed
  decoding drops them; `fieldValidation=Strict` refuses them (400, or 422 for patches), `Warn`
  (the default) answers with a `Warning: 299 - "unknown field \"spec.foo\""` header each.
Patches: JSON patch, merge patch, and strategic merge patch for the built-in kinds (merge
keys from the upstream schemas). Tables for `kubectl get` (see `k8py.api.tables`).
Server-side apply (`application/apply-patch+yaml`) and managedFields on every write
(`k8py.api.apply`). Deletion propagation: `propagationPolicy` Foreground or Orphan (or
`orphanDependents`) adds the garbage collector's `foregroundDeletion` or `orphan` finalizer;
Background deletes at once and leaves dependents to the collector. Deleting a namespace marks
it Terminating until the namespace controller has deleted its contents and emptied
`spec.finalizers` through the `finalize` subresource. Custom resources are served as their
CRDs define them (see `crds`).

`serviceaccounts/<name>/token` (a TokenRequest) is answered by `tokens`, never stored.

`call` serves every verb but watch from decoded documents: the HTTP path wraps it, and the
in-process transport (`inprocess`) calls it directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import web

from k8py.api import (apply, errors, meta, pruning, schemas, selectors, structural, tables,
                      timestamps)
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import (bodies, crds, patches, podproxy, podsubresources,
                                   queryparams, responses, reviews, scale, serviceips, storage,
                                   tokens, watchserving)
from k8py.server.apiserver.authn import USER_KEY, TokenFile, User
from k8py.server.apiserver.storage import ObjectStore, parse_resource_version


@dataclasses.dataclass(frozen=True)
class Target:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_target(registry: Registry, group: str, version: str, parts: list[str]) -> Target:
    """Which resource, namespace, name and subresource a path (after the version) names."""
    namespace = None
    if len(parts) >= 3 and parts[0] == "namespaces" and not (
        len(parts) == 3 and parts[2] in ("status", "finalize")
    ):
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3:
        raise errors.NotFound("the server could not find the requested resource")
    resource = registry.get(group, version, parts[0])
    if resource is None:
        raise errors.NotFound("the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else None
    subresource = parts[2] if len(parts) > 2 else None
    if subresource is not None and subresource not in resource.subresources:
        raise errors.NotFound(f"the server could not find the requested resource: k8py does "
                              f"not serve {resource.plural}/{subresource}")
    if namespace is not None and not resource.namespaced:
        raise errors.NotFound("the server could not find the requested resource")
    if namespace is not None:
        problem = meta.name_problem(registry.get("", "v1", "namespaces"), namespace)
        if problem:
            raise errors.NotFound("the server could not find the requested resource")
    return Target(resource, namespace, name, subresource)


WARNINGS_KEY = web.RequestKey("warnings", list)
FIELD_VALIDATION = ("Ignore", "Warn", "Strict")


def _field_validation(request: web.Request) -> str:
    mode = request.query.get("fieldValidation", "") or "Warn"
    if mode not in FIELD_VALIDATION:
        raise errors.BadRequest(
            f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{mode}"')
    return mode


def drop_unknown_fields(request: web.Request, resource: Resource, obj: dict,
                        patched: bool = False) -> dict:
    """Prune fields the kind's schema does not know; Strict refuses them, Warn warns."""
    mode = _field_validation(request)
    schema = None if resource.custom else schemas.for_kind(resource.group, resource.version,
                                                           resource.kind)
    try:
        if schema is None:  # whatever the kind, its metadata is an ObjectMeta
            pruning.prune({"metadata": obj.get("metadata")}, schemas.object_metadata())
        else:
            pruned, unknown = pruning.prune(obj, schema)
    except pruning.TypeMismatch as exc:
        raise _undecodable(resource, obj, str(exc), patched) from None
    if schema is None:
        if not resource.custom or not resource.schema:
            return obj
        pruned, unknown = structural.prune(obj, resource.schema)
    if not unknown:
        return obj
    listed = ", ".join(f'unknown field "{path}"' for path in unknown)
    if mode == "Strict":
        raise _undecodable(resource, obj, f"strict decoding error: {listed}", patched)
    if mode == "Warn":
        request.setdefault(WARNINGS_KEY, []).extend(f'unknown field "{p}"' for p in unknown)
    return pruned


def _undecodable(resource: Resource, obj: dict, message: str,
                 patched: bool) -> errors.StatusError:
    """Upstream's error for a body its typed decoding refuses: a 400 for a body as sent, a
    422 on the field `patch` for the result of a patch."""
    if patched:
        value = json.dumps(obj, separators=(",", ":"))
        return errors.Invalid(f' "" is invalid: patch: Invalid value: "{value}": {message}',
                              causes=[{"reason": "FieldValueInvalid", "message":
                                       f'Invalid value: "{value}": {message}',
                                       "field": "patch"}])
    return errors.BadRequest(f'{resource.kind} in version "{resource.version}" cannot be '
                             f"handled as a {resource.kind}: {message}")


def _consume(task: asyncio.Future) -> None:
    """Mark a finished write's outcome as seen: a write whose client left fails or
    succeeds with no one to tell, which is not worth a 'never retrieved' error in the log."""
    if not task.cancelled():
        task.exception()


def _with_warnings(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    for warning in request.get(WARNINGS_KEY, ()):
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response


TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def wants_table(request: web.Request) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (as `kubectl get` does)."""
    for part in request.headers.get("Accept", "").split(","):
        params = {p.strip() for p in part.split(";")}
        if "as=Table" in params and "g=meta.k8s.io" in params and (
            "v=v1" in params or "v=v1beta1" in params
        ):
            return True
    return False


def table_response(request: web.Request, resource: Resource, objects: list[dict],
                   list_metadata: dict | None = None) -> web.Response:
    include = request.query.get("includeObject", "Metadata")
    if include not in ("None", "Metadata", "Object"):
        raise errors.BadRequest(f"invalid includeObject: {include!r}")
    body = tables.table(resource.group, resource.plural, objects, include_object=include,
                        list_metadata=list_metadata)
    return responses.json_response(body, headers={"Content-Type": TABLE_CONTENT_TYPE})


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise errors.BadRequest(f'unsupported dryRun value "{value}": only "All" is allowed')
    return bool(values)


def _grace_period(resource: Resource, obj: dict, options: dict) -> int:
    """Seconds a pod gets to stop (upstream's pod strategy); 0 means delete at once."""
    if (resource.group, resource.plural) != ("", "pods"):
        return 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    value = options.get("gracePeriodSeconds")
    if value is None:
        value = spec.get("terminationGracePeriodSeconds", 30)
    return max(queryparams.parse_int64(value, "gracePeriodSeconds"), 0)


PROPAGATION_POLICIES = (None, "Background", "Foreground", "Orphan")


def delete_options(request: web.Request, body: Any) -> dict[str, Any]:
    """A delete's DeleteOptions as upstream reads them: the body's (typed against the
    schema, so `gracePeriodSeconds: "x"` is a 400), then the query's for what the body left
    out (the Python client sends `gracePeriodSeconds` and `propagationPolicy` there)."""
    if body is not None and not isinstance(body, dict):
        raise errors.BadRequest("DeleteOptions must be an object")
    options = dict(body or {})
    try:
        pruning.prune(options, schemas.for_kind("", "v1", "DeleteOptions"))
    except pruning.TypeMismatch as exc:
        raise errors.BadRequest(f"DeleteOptions cannot be decoded: {exc}") from None
    query = request.query
    if options.get("gracePeriodSeconds") is None:
        options["gracePeriodSeconds"] = queryparams.int64(query, "gracePeriodSeconds")
    if not options.get("propagationPolicy"):
        options["propagationPolicy"] = query.get("propagationPolicy") or None
    if options.get("orphanDependents") is None and query.get("orphanDependents"):
        options["orphanDependents"] = queryparams.boolean(query, "orphanDependents")
    if options["propagationPolicy"] not in PROPAGATION_POLICIES:
        raise errors.BadRequest(
            f"propagationPolicy {options['propagationPolicy']!r} is not supported")
    return options


def _manager(request: web.Request) -> str:
    return apply.manager_from(request.query.get("fieldManager"),
                              request.headers.get("User-Agent", ""))


def _schema(resource: Resource):
    return None if resource.custom else schemas.for_kind(resource.group, resource.version,
                                                         resource.kind)


def _requester(body: dict, user: User | None) -> dict:
    """A CSR's spec.username, uid, groups and extra: the requesting user's, whatever the
    body said (upstream's CSR strategy PrepareForCreate)."""
    spec = dict(body.get("spec") or {}) if isinstance(body.get("spec"), dict) else {}
    for field in ("username", "uid", "groups", "extra"):
        spec.pop(field, None)
    if user is not None:
        spec.update(user.info())
    return {**body, "spec": spec}


# Kinds whose create records who asked: (group, plural) -> stamp(body, user)
REQUESTER_FIELDS = {("certificates.k8s.io", "certificatesigningrequests"): _requester}

# Kinds whose DELETE answers with the deleted object, not a Status (upstream's stores with
# ReturnDeletedObject: pkg/registry/*/*/storage/storage.go); typed clients decode it so.
# subresources read and written as their whole object
PLAIN_SUBRESOURCES = (None, "status", "approval", "ephemeralcontainers")

RETURNS_DELETED_OBJECT = {
    ("", "pods"), ("", "services"), ("", "serviceaccounts"), ("", "namespaces"),
    ("", "persistentvolumes"), ("", "persistentvolumeclaims"), ("", "resourcequotas"),
    ("", "podtemplates"), ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
}

# Events expire (upstream's --event-ttl default): the store deletes them after this long.
TTL_SECONDS = {("", "events"): 3600.0, ("events.k8s.io", "events"): 3600.0}


def _matcher(request: web.Request):
    """The selectors' test for objects, or None when the request has no selector."""
    if not request.query.get("labelSelector") and not request.query.get("fieldSelector"):
        return None
    try:
        label = selectors.label_matcher(request.query.get("labelSelector", ""))
        field = selectors.field_matcher(request.query.get("fieldSelector", ""))
    except ValueError as exc:
        raise errors.BadRequest(str(exc)) from None
    return lambda obj: label(obj) and field(obj)


def _propagation(options: dict) -> str:
    """Background, Foreground or Orphan: how a delete treats the object's dependents."""
    if options.get("propagationPolicy"):
        return options["propagationPolicy"]
    return "Orphan" if options.get("orphanDependents") is True else "Background"


def _pending_finalizers(resource: Resource, obj: dict) -> bool:
    """Whether something must still finish before a deleted object may go: its finalizers,
    and for a namespace the `spec.finalizers` its contents' deletion clears."""
    if obj["metadata"].get("finalizers"):
        return True
    return resource.plural == "namespaces" and not resource.group and bool(
        (obj.get("spec") or {}).get("finalizers"))


def _marked_for_deletion(resource: Resource, obj: dict, policy: str) -> dict | None:
    """The object as a delete leaves it when deletion must wait: with `deletionTimestamp`,
    the finalizer the propagation policy asks for (the garbage collector's `orphan` or
    `foregroundDeletion`), and a namespace's phase Terminating. None: delete it now."""
    metadata = obj["metadata"]
    finalizers = list(metadata.get("finalizers") or [])
    wanted = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
    if wanted and wanted not in finalizers:
        if metadata.get("deletionTimestamp") is None or wanted == "orphan":
            finalizers.append(wanted)
    candidate = {**obj, "metadata": {**metadata, "finalizers": finalizers}}
    if not _pending_finalizers(resource, candidate):
        return None
    if metadata.get("deletionTimestamp") and finalizers == list(metadata.get("finalizers") or []):
        return obj
    new_meta = {**metadata, "finalizers": finalizers}
    new_meta.setdefault("deletionTimestamp", meta.now())
    new_meta.setdefault("deletionGracePeriodSeconds", 0)
    if not finalizers:
        new_meta.pop("finalizers")
    marked = {**obj, "metadata": new_meta}
    if resource.plural == "namespaces" and not resource.group:
        marked["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
    return marked


def _ephemeral_containers_only(body: dict, current: dict, subresource: str | None) -> dict:
    """A pod's ephemeral containers change through pods/ephemeralcontainers, and nothing
    else does there (upstream's dropNonEphemeralContainerUpdates); the main resource keeps
    them as they are."""
    source, spec_from = (current, body) if subresource == "ephemeralcontainers" else \
        (body, current)
    if subresource not in (None, "ephemeralcontainers"):
        return body
    spec = {k: v for k, v in (source.get("spec") or {}).items() if k != "ephemeralContainers"}
    ephemeral = (spec_from.get("spec") or {}).get("ephemeralContainers")
    if ephemeral:
        spec["ephemeralContainers"] = ephemeral
    if subresource is None:
        return {**body, "spec": spec}
    metadata = {**current["metadata"]}
    wanted = (body.get("metadata") or {}).get("resourceVersion")
    if wanted:
        metadata["resourceVersion"] = wanted
    return {**current, "metadata": metadata, "spec": spec}


class RestHandler:
    # pods/log, exec, attach, portforward: set by the application (`app.make_app`)
    pod_proxy: podproxy.PodProxy | None = None
    # the static bearer tokens, for TokenReviews: set by the application
    token_file: TokenFile | None = None

    def __init__(self, registry: Registry, objects: ObjectStore,
                 service_ips: serviceips.ServiceIPs | None = None,
                 service_accounts: tokens.ServiceAccountTokens | None = None):
        self.registry = registry
        self.objects = objects
        # ClusterIPs and NodePorts, from the server's --service-cidr and node port range
        self.service_ips = service_ips or serviceips.ServiceIPs(objects)
        # the issuer of service-account tokens (serviceaccounts/<name>/token)
        self.service_accounts = service_accounts or tokens.ServiceAccountTokens(objects,
                                                                                registry)
        # open HTTP watches, capped per user and in all
        self.watch_slots = watchserving.WatchSlots()

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        if request.method == "GET" or target.subresource in podproxy.SUBRESOURCES:
            response = await self._dispatch(request, target)
        else:
            # The server cancels a request's handler when its client leaves; a write goes on
            # to its end all the same (a half-done write could leak a ClusterIP, say).
            write = asyncio.ensure_future(self._dispatch(request, target))
            write.add_done_callback(_consume)
            await asyncio.wait({write})  # cancelling this wait leaves the write running
            response = write.result()
        return _with_warnings(request, response) if WARNINGS_KEY in request else response

    async def review_token(self, token: str, audiences: list[str] | None
                           ) -> tuple[User | None, list[str]]:
        """A TokenReview's question: the token file's users are good for any audience;
        service-account tokens as `tokens.ServiceAccountTokens.review` says."""
        user = self.token_file.lookup(token) if self.token_file is not None else None
        if user is not None:
            return user, list(audiences or self.service_accounts.audiences)
        return await self.service_accounts.review(token, audiences)

    async def _dispatch(self, request: web.Request, target: Target) -> web.StreamResponse:
        """Streams and raw bytes where HTTP allows them; everything else through `call`."""
        if target.subresource in podproxy.SUBRESOURCES and target.resource.kind == "Pod" \
                and not target.resource.group:
            if self.pod_proxy is None:
                raise errors.ServiceUnavailable(f"pods/{target.subresource} is not served here")
            return await self.pod_proxy.serve(request, target.namespace, target.name,
                                              target.subresource)
        plain = target.subresource in PLAIN_SUBRESOURCES
        if request.method == "GET" and plain:
            if target.name is None:
                if queryparams.boolean(request.query, "watch"):
                    user = request.get(USER_KEY)
                    return await watchserving.serve_watch(
                        request, self.objects, target.resource, target.namespace,
                        _matcher(request), self.watch_slots, user.name if user else "",
                        as_table=wants_table(request))
                if wants_table(request):
                    body = await self.list(request, target)
                    return table_response(request, target.resource, body["items"],
                                          body["metadata"])
                return await self.list_bytes(request, target)
            if target.resource.namespaced and target.namespace is None:
                raise errors.NotFound("the server could not find the requested resource")
            if wants_table(request) and target.subresource is None:
                obj = await self.get(request, target)
                return table_response(request, target.resource, [obj],
                                      {"resourceVersion": obj["metadata"]["resourceVersion"]})
            revision = parse_resource_version(request.query.get("resourceVersion"))
            body = await self.objects.get_raw(target.resource, target.namespace,
                                              target.name, revision=revision)
            return web.Response(body=body + b"\n", content_type="application/json")
        body, status = await self.call(request, target)
        return responses.json_response(body, status=status)

    async def call(self, request: web.Request, target: Target) -> tuple[dict[str, Any], int]:
        """Every verb but watch, as (decoded body, HTTP status). `request` may be an
        `inprocess.Request`: the in-process transport comes in here, past HTTP and JSON."""
        method = request.method
        if target.subresource == "scale":
            return await self._scale(request, target), 200
        if target.subresource in ("binding", "eviction"):
            return await self._pod_subresource(request, target), 201
        if target.subresource == "token":
            if method != "POST" or target.namespace is None:
                raise errors.MethodNotAllowed("the token subresource allows create")
            body = await bodies.read_document(request, bodies.OBJECT_TYPES | {bodies.PROTOBUF})
            return await self.service_accounts.request(target.namespace, target.name, body), 201
        if target.subresource == "finalize":
            if method != "PUT":
                raise errors.MethodNotAllowed("the finalize subresource allows update")
            return await self.update(request, target), 200
        if target.subresource == "approval" and method not in ("GET", "PUT", "PATCH"):
            raise errors.MethodNotAllowed("the approval subresource allows get, update and "
                                          "patch")
        if target.subresource == "ephemeralcontainers" and method not in ("GET", "PUT",
                                                                          "PATCH"):
            raise errors.MethodNotAllowed("the ephemeralcontainers subresource allows get, "
                                          "update and patch")
        if target.subresource not in PLAIN_SUBRESOURCES:
            raise errors.MethodNotAllowed(
                f"the {target.subresource} subresource is not served yet"
            )
        if target.name is None:
            if method == "GET":
                return await self.list(request, target), 200
            if method == "POST":
                if target.resource.namespaced and target.namespace is None:
                    raise errors.MethodNotAllowed("create needs a namespace in the URL")
                return await self.create(request, target), 201
            if method == "DELETE":
                return await self.delete_collection(request, target), 200
        else:
            if target.resource.namespaced and target.namespace is None:
                raise errors.NotFound("the server could not find the requested resource")
            if method == "GET":
                return await self.get(request, target), 200
            if method == "PUT":
                return await self.update(request, target), 200
            if method == "PATCH":
                return await self.patch(request, target), 200
            if method == "DELETE":
                return await self.delete(request, target)
        raise errors.MethodNotAllowed("the server does not allow this method on the requested "
                                      "resource")

    async def _pod_subresource(self, request: web.Request, target: Target) -> dict[str, Any]:
        if request.method != "POST":
            raise errors.MethodNotAllowed(f"the {target.subresource} subresource allows create")
        body = await bodies.read_document(request, bodies.OBJECT_TYPES | {bodies.PROTOBUF})
        if target.subresource == "binding":
            return await podsubresources.bind(self.objects, target.resource, target.namespace,
                                              target.name, body)

        options = delete_options(request, (body or {}).get("deleteOptions")
                                 if isinstance(body, dict) else None)

        async def delete(pod: dict) -> None:
            # the budget is spent: this delete retries on its own, never spending it twice
            await storage.guaranteed(lambda: self._delete_once(request, target, options))

        budgets = self.registry.get("policy", "v1", "poddisruptionbudgets")
        return await podsubresources.evict(self.objects, target.resource, budgets,
                                           target.namespace, target.name, delete)

    async def _scale(self, request: web.Request, target: Target) -> dict[str, Any]:
        args = (self.objects, target.resource, target.namespace, target.name)
        if request.method == "GET":
            return await scale.get(*args)
        if request.method == "PUT":
            body = await bodies.read_document(request, bodies.OBJECT_TYPES)
            return await scale.update(*args, body, manager=_manager(request),
                                      dry_run=_dry_run(request))
        if request.method == "PATCH":
            media_type = bodies.media_type(request)
            accepted = {bodies.JSON_PATCH, bodies.MERGE_PATCH, bodies.STRATEGIC_MERGE_PATCH}
            if media_type not in accepted:
                raise errors.UnsupportedMediaType(
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(sorted(accepted))}")
            body = await bodies.read_document(request, accepted)
            return await scale.update(*args, body, media_type=media_type,
                                      manager=_manager(request), dry_run=_dry_run(request))
        raise errors.MethodNotAllowed("the scale subresource allows get, update and patch")

    # --- reads ------------------------------------------------------------------------------

    async def get(self, request: web.Request, target: Target) -> dict[str, Any]:
        # "0" means "any version", which the latest (revision 0 to the store) is.
        revision = parse_resource_version(request.query.get("resourceVersion"))
        return await self.objects.get(target.resource, target.namespace, target.name,
                                      revision=revision)

    async def list_bytes(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A JSON list assembled from stored bytes, without decoding the items. A list without
        a limit is streamed page by page (chunked), so a LIST of thousands of objects never
        sits in memory whole."""
        query = request.query
        if queryparams.int64(query, "limit", 0) > 0 or query.get("continue"):
            body = await self.list(request, target, as_bytes=True)
            head = {"kind": body["kind"], "apiVersion": body["apiVersion"],
                    "metadata": body["metadata"]}
            prefix = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":['
            return web.Response(body=prefix + b",".join(body["items"]) + b"]}\n",
                                content_type="application/json")
        revision = self._list_revision(request)
        pages = self.objects.pages(target.resource, target.namespace,
                                   matches=_matcher(request), revision=revision)
        revision, first = await anext(pages)  # errors surface here, before the headers
        head = {"kind": target.resource.list_kind, "apiVersion": target.resource.api_version,
                "metadata": {"resourceVersion": str(revision)}}
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(json.dumps(head, separators=(",", ":")).encode()[:-1]
                             + b',"items":[' + b",".join(first))
        wrote = bool(first)
        async for _, items in pages:
            if items:
                await response.write((b"," if wrote else b"") + b",".join(items))
                wrote = True
        await response.write(b"]}\n")
        await response.write_eof()
        return response

    def _list_revision(self, request: web.Request) -> int:
        """The revision a list reads at: Exact asks for one; otherwise the latest."""
        query = request.query
        revision = parse_resource_version(query.get("resourceVersion"))
        match = query.get("resourceVersionMatch", "")
        if match not in ("", "NotOlderThan", "Exact"):
            raise errors.BadRequest(f"invalid resourceVersionMatch: {match!r}")
        if match and not query.get("resourceVersion"):
            raise errors.BadRequest("resourceVersionMatch requires resourceVersion")
        # NotOlderThan and "0" may read the latest, which is never older.
        return revision if match == "Exact" else 0

    async def list(self, request: web.Request, target: Target,
                   as_bytes: bool = False) -> dict[str, Any]:
        query = request.query
        limit = queryparams.int64(query, "limit", 0)
        at = self._list_revision(request)
        items, list_revision, token = await self.objects.list(
            target.resource, target.namespace, matches=_matcher(request),
            limit=max(limit, 0), continue_token=query.get("continue", ""), revision=at,
            as_bytes=as_bytes,
        )
        metadata: dict[str, Any] = {"resourceVersion": str(list_revision)}
        if token:
            metadata["continue"] = token
        return {
            "kind": target.resource.list_kind,
            "apiVersion": target.resource.api_version,
            "metadata": metadata,
            "items": items,
        }

    # --- writes -----------------------------------------------------------------------------

    async def create(self, request: web.Request, target: Target) -> dict[str, Any]:
        body = await bodies.read_document(request, bodies.OBJECT_TYPES | {bodies.PROTOBUF})
        if (target.resource.group, target.resource.plural) in reviews.REVIEWS:
            return await reviews.answer(target.resource, body, request.get(USER_KEY),
                                        target.namespace, self.review_token)
        if isinstance(body, dict):
            body = drop_unknown_fields(request, target.resource, body)
            stamp = REQUESTER_FIELDS.get((target.resource.group, target.resource.plural))
            if stamp is not None:
                body = stamp(body, request.get(USER_KEY))
        obj = meta.prepare_create(target.resource, body, target.namespace)
        obj = apply.record_update(None, obj, _manager(request), target.resource.api_version,
                                  _schema(target.resource))
        if target.resource.namespaced and target.resource.plural != "namespaces":
            await self._require_namespace(obj["metadata"]["namespace"])
        ttl = TTL_SECONDS.get((target.resource.group, target.resource.plural))
        dry_run = _dry_run(request)
        created = await self.service_ips.create(
            target.resource, obj, lambda o: self.objects.create(target.resource, o, ttl=ttl),
            dry_run=dry_run)
        if dry_run:
            return created
        await crds.after_write(self.registry, self.objects, target.resource, created)
        return created

    async def _require_namespace(self, namespace: str) -> None:
        ns = self.registry.get("", "v1", "namespaces")
        try:
            current = await self.objects.get(ns, None, namespace)
        except errors.NotFound:
            raise errors.NotFound(f'namespaces "{namespace}" not found', name=namespace,
                                  kind="namespaces") from None
        if current["metadata"].get("deletionTimestamp"):
            raise errors.Forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated"
            )

    async def update(self, request: web.Request, target: Target) -> dict[str, Any]:
        body = await bodies.read_document(request, bodies.OBJECT_TYPES)
        if not isinstance(body, dict):
            raise errors.BadRequest("the request body must be a JSON or YAML object")
        body = drop_unknown_fields(request, target.resource, body)
        wanted = parse_resource_version((body.get("metadata") or {}).get("resourceVersion"))

        async def change(current: dict) -> dict:
            # an update without a resourceVersion is unconditional: it applies to any
            if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
                raise errors.conflict(target.resource.plural, target.name,
                                      target.resource.group)
            return body

        return await self._guaranteed(change, request, target)

    async def patch(self, request: web.Request, target: Target) -> dict[str, Any]:
        media_type = bodies.media_type(request)
        resource = target.resource
        if media_type == bodies.APPLY_PATCH:
            return await self.server_side_apply(request, target)
        schema = schemas.for_kind(resource.group, resource.version, resource.kind)
        accepted = [bodies.JSON_PATCH, bodies.MERGE_PATCH]
        if schema is not None:  # upstream has no strategic merge patch for custom resources
            accepted.append(bodies.STRATEGIC_MERGE_PATCH)
        if media_type not in accepted:
            raise errors.UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(accepted + [bodies.APPLY_PATCH])}"
            )
        patch = await bodies.read_document(request, set(accepted))
        return await self._guaranteed(
            lambda current: self._patched(request, target, media_type, patch, schema, current),
            request, target)

    async def _guaranteed(self, change, request: web.Request, target: Target,
                          applied: bool = False) -> dict:
        """Read, change, write; when another writer got in between, read again and redo the
        change (`storage.guaranteed`). A change that pins the resourceVersion it applies to
        raises the plain Conflict itself once the object has moved on."""
        async def step() -> dict:
            current = await self.objects.get(target.resource, target.namespace, target.name)
            new = await change(current)
            return await self._write_update(request, target, new, current, applied=applied)

        return await storage.guaranteed(step)

    async def _patched(self, request: web.Request, target: Target, media_type: str,
                       patch: Any, schema, current: dict) -> dict:
        """current with the patch applied. A resourceVersion in the result other than
        current's (the patch set one) pins it: a 409 once the object has moved on."""
        patched = patches.apply_patch(media_type, current, patch, schema)
        if not isinstance(patched, dict):
            raise errors.BadRequest("the patched object is not an object")
        patched.setdefault("metadata", {})
        if not isinstance(patched["metadata"], dict):
            raise errors.BadRequest("metadata must be an object")
        patched = drop_unknown_fields(request, target.resource, patched, patched=True)
        wanted = parse_resource_version(patched["metadata"].get("resourceVersion"))
        if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(target.resource.plural, target.name, target.resource.group)
        return patched

    async def server_side_apply(self, request: web.Request, target: Target) -> dict[str, Any]:
        resource = target.resource
        if not request.query.get("fieldManager"):
            raise errors.BadRequest("PATCH, application/apply-patch+yaml: fieldManager is "
                                    "required for apply requests")
        config = await bodies.read_document(request, {bodies.APPLY_PATCH})
        config = apply.parse_config(config)
        config = meta.check_type(resource, config)
        if config["metadata"].get("name", target.name) != target.name:
            raise errors.BadRequest("the name of the object in the apply configuration does "
                                    "not match the name on the URL")
        config["metadata"]["name"] = target.name
        try:
            config = drop_unknown_fields(request, resource, config)
        except errors.StatusError as exc:
            raise errors.BadRequest(f"error strict decoding YAML: {exc.message}") from None
        force = queryparams.boolean(request.query, "force")
        manager = request.query["fieldManager"]
        try:
            current = await self.objects.get(resource, target.namespace, target.name)
        except errors.NotFound:
            current = None
        if current is None:
            obj = meta.prepare_create(resource, config, target.namespace)
            # The applier owns what it sent, not the defaults and generated fields.
            owned = apply.apply(None, config, manager, force, resource.api_version,
                                _schema(resource))
            if owned["metadata"].get("managedFields"):  # an empty apply owns nothing
                obj["metadata"]["managedFields"] = owned["metadata"]["managedFields"]
            if resource.namespaced:
                await self._require_namespace(obj["metadata"]["namespace"])
            dry_run = _dry_run(request)
            created = await self.service_ips.create(
                resource, obj, lambda o: self.objects.create(resource, o), dry_run=dry_run)
            if dry_run:
                return created
            await crds.after_write(self.registry, self.objects, resource, created)
            return created
        async def change(live: dict) -> dict:
            return apply.apply(live, config, manager, force, resource.api_version,
                               _schema(resource))

        return await self._guaranteed(change, request, target, applied=True)

    async def _write_update(self, request: web.Request, target: Target, body: dict,
                            current: dict, applied: bool = False) -> dict[str, Any]:
        resource = target.resource
        body = self.service_ips.carry_over(resource, body, current)
        if resource.kind == "Pod" and not resource.group:
            body = _ephemeral_containers_only(body, current, target.subresource)
        new = meta.prepare_update(resource, body, current)
        if applied:
            new["metadata"]["managedFields"] = body["metadata"].get("managedFields", [])
        else:
            new = apply.record_update(current, new, _manager(request), resource.api_version,
                                      _schema(resource), target.subresource or "")
        if "status" in resource.subresources:
            if target.subresource in ("status", "approval"):
                status = new.get("status")
                if target.subresource == "approval":  # CSRs: only the conditions change
                    status = {**(current.get("status") or {}),
                              "conditions": (status or {}).get("conditions")}
                new = {k: v for k, v in current.items() if k != "status"}
                if status is not None:
                    new["status"] = status
                new["metadata"] = {**current["metadata"]}
                new["metadata"].pop("resourceVersion", None)
            elif "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        if target.subresource == "finalize":  # namespaces: only spec.finalizers changes
            finalizers = (new.get("spec") or {}).get("finalizers") or []
            new = {**current, "metadata": {k: v for k, v in current["metadata"].items()
                                           if k != "resourceVersion"},
                   "spec": {**(current.get("spec") or {}), "finalizers": finalizers}}
        elif "finalizers" in (current.get("spec") or {}) and resource.plural == "namespaces":
            new.setdefault("spec", {})["finalizers"] = current["spec"]["finalizers"]
        revision = int(current["metadata"]["resourceVersion"])
        if _dry_run(request):
            new = await self.service_ips.update(resource, new, current, None, dry_run=True)
            return {**new, "metadata": {**new["metadata"], "resourceVersion": str(revision)}}
        if new["metadata"].get("deletionTimestamp") and not _pending_finalizers(resource, new):
            return await self._remove(resource, target.namespace, target.name, revision)
        unchanged = {**current, "metadata": {k: v for k, v in current["metadata"].items()
                                              if k != "resourceVersion"}}
        if new == unchanged:
            return current
        ttl = TTL_SECONDS.get((resource.group, resource.plural))
        updated = await self.service_ips.update(
            resource, new, current, lambda o: self.objects.update(resource, o, revision, ttl=ttl))
        await crds.after_write(self.registry, self.objects, resource, updated)
        return updated

    async def _remove(self, resource: Resource, namespace: str | None, name: str,
                      revision: int) -> dict[str, Any]:
        """Delete an object for good (finalizers done); a CRD takes its objects with it."""
        current = await self.objects.get(resource, namespace, name)
        await crds.before_delete(self.registry, self.objects, resource, current)
        deleted = await self.objects.delete(resource, namespace, name, revision)
        await self.service_ips.deleted(resource, deleted)
        await crds.after_delete(self.registry, self.objects, resource, deleted)
        return deleted

    async def delete(self, request: web.Request, target: Target) -> tuple[dict[str, Any], int]:
        """Delete, or mark for deletion; retried while other writers change the object
        meanwhile (a controller writing status), so only a precondition the client sent can
        make it a 409."""
        options = await self._delete_options(request)
        return await storage.guaranteed(lambda: self._delete_once(request, target, options))

    async def _delete_once(self, request: web.Request, target: Target,
                           options: dict[str, Any]) -> tuple[dict[str, Any], int]:
        resource = target.resource
        current = await self.objects.get(resource, target.namespace, target.name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"]["uid"]:
            raise errors.Conflict(
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                f"object meta: {current['metadata']['uid']}"
            )
        if preconditions.get("resourceVersion") and (
            preconditions["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(resource.plural, target.name, resource.group)
        revision = int(current["metadata"]["resourceVersion"])
        grace = _grace_period(resource, current, options)
        if grace:
            # A running pod is deleted gracefully: marked now, removed by its kubelet once
            # its containers have stopped (or at once if it was never scheduled).
            existing = current["metadata"].get("deletionGracePeriodSeconds")
            if existing is not None and existing <= grace:
                return current, 200
            marked = {**current, "metadata": {**current["metadata"],
                                              "deletionTimestamp": timestamps.after(grace),
                                              "deletionGracePeriodSeconds": grace}}
            if _dry_run(request):
                return marked, 200
            return await self.objects.update(resource, marked, revision), 200
        marked = _marked_for_deletion(resource, current, _propagation(options))
        if marked is not None:
            # upstream answers 202 for a deletion that waits only when the request set the
            # deprecated orphanDependents: false; otherwise 200, with the object
            code = 202 if options.get("orphanDependents") is False else 200
            if marked == current:
                return current, code
            if _dry_run(request):
                return marked, code
            return await self.objects.update(resource, marked, revision), code
        if _dry_run(request):
            return current, 200
        deleted = await self._remove(resource, target.namespace, target.name, revision)
        if (resource.group, resource.plural) in RETURNS_DELETED_OBJECT:
            return deleted, 200
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": target.name, "group": resource.group, "kind": resource.plural,
                        "uid": current["metadata"]["uid"]},
        }, 200

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = None
        if request.body_exists:
            body = await bodies.read_document(request, bodies.OBJECT_TYPES)
        return delete_options(request, body)

    async def delete_collection(self, request: web.Request, target: Target) -> dict[str, Any]:
        """Each matching object deleted as a DELETE of it would be (grace periods,
        finalizers, propagation); one that is gone meanwhile is skipped, as upstream."""
        options = await self._delete_options(request)
        items, revision, _ = await self.objects.list(
            target.resource, target.namespace, matches=_matcher(request)
        )
        deleted = []
        for item in items:
            sub = Target(target.resource, item["metadata"].get("namespace"),
                         item["metadata"]["name"], None)
            try:
                result, _ = await storage.guaranteed(
                    lambda: self._delete_once(request, sub, options))
            except errors.NotFound:
                continue
            deleted.append(item if result.get("kind") == "Status" else result)
        return {
            "kind": target.resource.list_kind,
            "apiVersion": target.resource.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": deleted,
        }
