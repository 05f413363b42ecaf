"""The REST verbs on resources, over HTTP and the in-process transport: get, list, watch,
create, update, patch (JSON, merge, strategic merge, server-side apply), delete,
deletecollection, and the subresources, for every resource in the registry.

URL shapes (upstream's):
    /api/v1/<plural>[/<name>[/<subresource>]]                          cluster scope, or
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<subresource>]]          namespaced
    /apis/<group>/<version>/...                                        the same for groups
A namespaced plural without a namespace lists or watches across all namespaces.

This module is generic: it parses the request (target, query, body, decoded strictly and
checked against the kind's schema by `fieldvalidation`), and hands writes to the write path,
`genericstore.GenericStore` (admission, the kind's strategy, the store), reads to
`storage.ObjectStore` and watches to `watchserving`. Nothing here depends on a kind; what
does is in `strategies`. Subresources are served by their own modules: `scale`,
`podsubresources` (binding, eviction), `tokens` (serviceaccounts/<name>/token), `podproxy`
(log, exec, attach, portforward); `metricsapi` answers the metrics.k8s.io group. Status,
approval, finalize and ephemeralcontainers are writes of their object that the kind's
strategy restricts.

Semantics follow upstream's generic registry:
- update needs the object's current resourceVersion when it carries one (409 otherwise); an
  update that changes nothing writes nothing; read-modify-writes without a pinned
  resourceVersion never fail with 409 (`storage.guaranteed`);
- `dryRun=All` runs every check and writes nothing;
- fields the upstream schema of a built-in kind does not know are dropped, as upstream's
  typed decoding drops them; `fieldValidation=Strict` refuses them (400, or 422 for patches),
  `Warn` (the default) answers with a `Warning` header each;
- plain GETs and LISTs are served from the stored bytes, never decoded (`storage`); Tables
  for `kubectl get` (`responses.table_response`).

`call` serves every verb but watch from decoded documents: the HTTP path wraps it, and the
in-process transport (`inprocess`) calls it directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import web

from k8py.api import apply, errors, meta, patching, schemas
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import (admission, audit, bodies, fieldvalidation, patches, podproxy,
                                   metricsapi, podsubresources, queryparams, responses, scale,
                                   serviceips, strategies, tokens, watchserving)
from k8py.server.apiserver.authn import USER_KEY, TokenFile, User
from k8py.server.apiserver.fieldvalidation import drop_unknown_fields
from k8py.server.apiserver.genericstore import GenericStore, WriteContext
from k8py.server.apiserver.noderestriction import NodeRestriction
from k8py.server.apiserver.rbacescalation import RBACEscalation
from k8py.server.apiserver.storage import ObjectStore, parse_resource_version

# subresources read and written as their whole object (what a write may change there is
# the kind's strategy's business)
PLAIN_SUBRESOURCES = (None, "status", "approval", "ephemeralcontainers", "finalize")
_METHODS = {"approval": ("GET", "PUT", "PATCH"), "ephemeralcontainers": ("GET", "PUT", "PATCH"),
            "finalize": ("PUT",)}


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
    if name is not None and "%" in name:  # upstream's key functions (IsValidPathSegmentName)
        quoted = json.dumps(name, ensure_ascii=False)
        raise errors.BadRequest(f"Name parameter invalid: {quoted}: may not contain '%'")
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


def _applied(resource: Resource, live: dict | None, config: dict, manager: str,
             force: bool) -> dict:
    """`apply.apply`, with a configuration that cannot be merged (a list-map element
    without its key) a 400 naming the problem; upstream's structured-merge-diff says it
    as "failed to create typed patch object", and answers 500, which no bad input gets here."""
    try:
        return apply.apply(live, config, manager, force, resource.api_version,
                           schemas.for_resource(resource))
    except patching.PatchTooLarge as exc:
        raise errors.RequestEntityTooLarge(str(exc)) from None
    except patching.PatchError as exc:
        raise errors.BadRequest(f"failed to create typed patch object ({resource.group}/"
                                f"{resource.version}, Kind={resource.kind}): {exc}") from None


def _consume(task: asyncio.Future) -> None:
    """Mark a finished write's outcome as seen: a write whose client left fails or
    succeeds with no one to tell, which is not worth a 'never retrieved' error in the log."""
    if not task.cancelled():
        task.exception()


def _list_opening(resource: Resource, metadata: dict[str, Any]) -> bytes:
    """A JSON list up to its first item: `{"kind":…,"apiVersion":…,"metadata":…,"items":[`."""
    head = {"kind": resource.list_kind, "apiVersion": resource.api_version,
            "metadata": metadata}
    return json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":['


def _check_pinned(target: Target, wanted: int, current: dict[str, Any]) -> None:
    """A write that names a resourceVersion applies to that one only: 409 once the object
    has moved on (none named: it applies to any)."""
    if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
        raise errors.conflict(target.resource.plural, target.name, target.resource.group)


def _context(request: web.Request, subresource: str | None = None) -> WriteContext:
    """The write's context; admission's warnings and audit annotations go to the request
    (the warnings become its answer's `Warning` headers)."""
    return WriteContext(
        user=request.get(USER_KEY),
        manager=apply.manager_from(request.query.get("fieldManager"),
                                   request.headers.get("User-Agent", "")),
        dry_run=queryparams.dry_run(request.query), subresource=subresource,
        warnings=request.setdefault(fieldvalidation.WARNINGS_KEY, []),
        annotations=request.setdefault(admission.AUDIT_ANNOTATIONS_KEY, {}))


class RestHandler:
    # pods/log, exec, attach, portforward: set by the application (`app.make_app`)
    pod_proxy: podproxy.PodProxy | None = None
    # the static bearer tokens, for TokenReviews: set by the application
    token_file: TokenFile | None = None
    # the server's authorizers (`authorization.Authorization`): set by the application with
    # `use_authorization`; None lets every caller do everything (stores served bare)
    authorization: Any = None
    # metrics.k8s.io (`metricsapi`), when the metrics-server add-on is on: set by the app
    metrics: metricsapi.MetricsAPI | None = None

    def __init__(self, registry: Registry, objects: ObjectStore,
                 service_ips: serviceips.ServiceIPs | None = None,
                 service_accounts: tokens.ServiceAccountTokens | None = None,
                 chain: admission.Chain | None = None):
        self.registry = registry
        self.objects = objects
        # ClusterIPs and NodePorts, from the server's --service-cidr and node port range
        self.service_ips = service_ips or serviceips.ServiceIPs(objects)
        # the issuer of service-account tokens (serviceaccounts/<name>/token)
        self.service_accounts = service_accounts or tokens.ServiceAccountTokens(objects,
                                                                                registry)
        self.store = GenericStore(registry, objects, strategies.Strategies(
            registry, objects, self.service_ips, self.review_token), chain)
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
        return fieldvalidation.with_warnings(request, response)

    def use_authorization(self, authorization: Any) -> None:
        """Authorize in-process calls with `authorization` (HTTP requests are authorized
        by the application's middleware), answer access reviews with it, and add the
        admission plugins that consult it: RBAC's escalation checks, NodeRestriction."""
        self.authorization = authorization
        self.store.strategies.use_access_reviewer(authorization)
        plugins = self.store.admission.plugins
        # before ResourceQuota, which must stay last: it charges what the others let in
        at = next((i for i, p in enumerate(plugins) if p.name == "ResourceQuota"),
                  len(plugins))
        if authorization.policy is not None:
            plugins.insert(at, RBACEscalation(authorization.policy, authorization.authorizer))
        if authorization.graph is not None:
            plugins.insert(at, NodeRestriction(self._stored_pod, self._stored_node))

    async def _stored_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.objects.get(self.registry.get("", "v1", "pods"), namespace, name)
        except errors.NotFound:
            return None

    async def _stored_node(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.objects.get(self.registry.get("", "v1", "nodes"), None, name)
        except errors.NotFound:
            return None

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
        if target.subresource in podproxy.SUBRESOURCES:
            if self.pod_proxy is None:
                raise errors.ServiceUnavailable(f"pods/{target.subresource} is not served here")
            return await self.pod_proxy.serve(request, target.namespace, target.name,
                                              target.subresource)
        if self.metrics is not None and target.resource.group == metricsapi.GROUP:
            body, _ = await self.call(request, target)
            if responses.wants_table(request):
                return responses.json_response(
                    metricsapi.table(body["items"] if "items" in body else [body],
                                     request.query.get("includeObject", "Metadata")),
                    headers={"Content-Type": responses.TABLE_CONTENT_TYPE})
            return responses.json_response(body)
        if request.method == "GET" and target.subresource in PLAIN_SUBRESOURCES:
            if target.name is None:
                if queryparams.boolean(request.query, "watch"):
                    user = request.get(USER_KEY)
                    return await watchserving.serve_watch(
                        request, self.objects, target.resource, target.namespace,
                        queryparams.matcher(request.query), self.watch_slots,
                        user.name if user else "", as_table=responses.wants_table(request))
                if responses.wants_table(request):
                    body = await self.list(request, target)
                    return responses.table_response(request, target.resource, body["items"],
                                                    body["metadata"])
                return await self.list_bytes(request, target)
            if target.resource.namespaced and target.namespace is None:
                raise errors.NotFound("the server could not find the requested resource")
            if responses.wants_table(request) and target.subresource is None:
                obj = await self.get(request, target)
                return responses.table_response(
                    request, target.resource, [obj],
                    {"resourceVersion": obj["metadata"]["resourceVersion"]})
            # as `get`: not older than the resourceVersion given, so the latest
            await self.objects.not_older_than(
                parse_resource_version(request.query.get("resourceVersion")))
            body = await self.objects.get_raw(target.resource, target.namespace,
                                              target.name)
            return web.Response(body=body + b"\n", content_type="application/json")
        body, status = await self.call(request, target)
        return responses.json_response(body, status=status)

    async def call(self, request: web.Request, target: Target) -> tuple[dict[str, Any], int]:
        """Every verb but watch, as (decoded body, HTTP status). `request` may be an
        `inprocess.Request`: the in-process transport comes in here, past HTTP and JSON."""
        method, subresource = request.method, target.subresource
        if target.resource.group == metricsapi.GROUP:
            if self.metrics is None:  # the metrics-server add-on is off: no such group
                raise errors.NotFound("the server could not find the requested resource")
            return await self.metrics.call(method, target.resource, target.namespace,
                                           target.name, subresource, request.query), 200
        if subresource == "scale":
            return await self._scale(request, target), 200
        if subresource in ("binding", "eviction"):
            return await self._pod_subresource(request, target), 201
        if subresource == "token":
            if method != "POST" or target.namespace is None:
                raise errors.MethodNotAllowed("the token subresource allows create")
            body = await bodies.read_document(request, bodies.OBJECT_TYPES | {bodies.PROTOBUF})
            if isinstance(body, dict):  # a TokenRequest is a create: admission sees it
                body = await self.store.admit_subresource(
                    "CREATE", target.resource, target.namespace, target.name, body,
                    _context(request, "token"))
            return await self.service_accounts.request(target.namespace, target.name, body), 201
        if subresource not in PLAIN_SUBRESOURCES:
            raise errors.MethodNotAllowed(f"the {subresource} subresource is not served yet")
        allowed = _METHODS.get(subresource)
        if allowed is not None and method not in allowed:
            verbs = {"GET": "get", "PUT": "update", "PATCH": "patch"}
            raise errors.MethodNotAllowed(
                f"the {subresource} subresource allows "
                + " and ".join(", ".join(verbs[m] for m in allowed).rsplit(", ", 1)))
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
        ctx = _context(request, target.subresource)
        body = await self.store.admit_subresource("CREATE", target.resource, target.namespace,
                                                  target.name, body, ctx)
        if target.subresource == "binding":
            return await podsubresources.bind(self.objects, target.resource, target.namespace,
                                              target.name, body)
        options = queryparams.delete_options(request.query, (body or {}).get("deleteOptions")
                                             if isinstance(body, dict) else None)

        async def delete(pod: dict) -> None:
            # the budget is spent: this delete retries on its own, never spending it twice
            await self.store.delete(target.resource, target.namespace, target.name, options,
                                    ctx)

        budgets = self.registry.get("policy", "v1", "poddisruptionbudgets")
        return await podsubresources.evict(self.objects, target.resource, budgets,
                                           target.namespace, target.name, delete)

    async def _scale(self, request: web.Request, target: Target) -> dict[str, Any]:
        args = (self.objects, target.resource, target.namespace, target.name)
        if request.method == "GET":
            return await scale.get(*args)
        ctx = _context(request, "scale")
        if request.method == "PUT":
            body = await bodies.read_document(request, bodies.OBJECT_TYPES)
            body = await self.store.admit_subresource("UPDATE", target.resource,
                                                      target.namespace, target.name, body, ctx)
            return await scale.update(*args, body, manager=ctx.manager, dry_run=ctx.dry_run)
        if request.method == "PATCH":
            media_type = bodies.media_type(request)
            accepted = {bodies.JSON_PATCH, bodies.MERGE_PATCH, bodies.STRATEGIC_MERGE_PATCH}
            if media_type not in accepted:
                raise errors.UnsupportedMediaType(
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(sorted(accepted))}")
            body = await bodies.read_document(request, accepted)
            await self.store.admit_subresource("UPDATE", target.resource, target.namespace,
                                               target.name, None, ctx)
            return await scale.update(*args, body, media_type=media_type,
                                      manager=ctx.manager, dry_run=ctx.dry_run)
        raise errors.MethodNotAllowed("the scale subresource allows get, update and patch")

    # --- reads ------------------------------------------------------------------------------

    async def get(self, request: web.Request, target: Target) -> dict[str, Any]:
        # "0" means "any version" and N "not older than N": the latest is both (once the
        # store has reached N), as upstream's watch cache answers
        await self.objects.not_older_than(
            parse_resource_version(request.query.get("resourceVersion")))
        return await self.objects.get(target.resource, target.namespace, target.name)

    async def list_bytes(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A JSON list assembled from stored bytes, without decoding the items. A list without
        a limit is streamed page by page (chunked), so a LIST of thousands of objects never
        sits in memory whole."""
        query = request.query
        # a list logged whole in the audit log (RequestResponse) is assembled whole
        if queryparams.int64(query, "limit", 0) > 0 or query.get("continue") or \
                audit.records_response(request):
            body = await self.list(request, target, as_bytes=True)
            return web.Response(body=_list_opening(target.resource, body["metadata"])
                                + b",".join(body["items"]) + b"]}\n",
                                content_type="application/json")
        revision = await self._list_revision(request)
        pages = self.objects.pages(target.resource, target.namespace,
                                   matches=queryparams.matcher(request.query), revision=revision)
        revision, first = await anext(pages)  # errors surface here, before the headers
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(_list_opening(target.resource, {"resourceVersion": str(revision)})
                             + b",".join(first))
        wrote = bool(first)
        async for _, items in pages:
            if items:
                await response.write((b"," if wrote else b"") + b",".join(items))
                wrote = True
        await response.write(b"]}\n")
        await response.write_eof()
        return response

    async def _list_revision(self, request: web.Request) -> int:
        """The revision a list reads at: Exact asks for one; otherwise the latest, once the
        store has reached the resourceVersion given (NotOlderThan)."""
        query = request.query
        revision = parse_resource_version(query.get("resourceVersion"))
        match = query.get("resourceVersionMatch", "")
        if match not in ("", "NotOlderThan", "Exact"):
            raise errors.BadRequest(f"invalid resourceVersionMatch: {match!r}")
        if match and not query.get("resourceVersion"):
            raise errors.BadRequest("resourceVersionMatch requires resourceVersion")
        if match == "Exact":
            return revision
        await self.objects.not_older_than(revision)
        return 0  # the latest

    async def list(self, request: web.Request, target: Target,
                   as_bytes: bool = False) -> dict[str, Any]:
        query = request.query
        limit = queryparams.int64(query, "limit", 0)
        at = await self._list_revision(request)
        items, list_revision, token = await self.objects.list(
            target.resource, target.namespace, matches=queryparams.matcher(request.query),
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
        ctx = _context(request)
        answer = await self.store.answer(target.resource, target.namespace, body, ctx)
        if answer is not None:
            return answer
        if isinstance(body, dict):
            body = drop_unknown_fields(request, target.resource, body)
        return await self.store.create(target.resource, target.namespace, body, ctx)

    async def update(self, request: web.Request, target: Target) -> dict[str, Any]:
        body = await bodies.read_document(request, bodies.OBJECT_TYPES)
        if not isinstance(body, dict):
            raise errors.BadRequest("the request body must be a JSON or YAML object")
        body = drop_unknown_fields(request, target.resource, body)
        wanted = parse_resource_version((body.get("metadata") or {}).get("resourceVersion"))

        async def change(current: dict) -> dict:
            _check_pinned(target, wanted, current)
            return body

        return await self.store.update(target.resource, target.namespace, target.name, change,
                                       _context(request, target.subresource))

    async def patch(self, request: web.Request, target: Target) -> dict[str, Any]:
        media_type = bodies.media_type(request)
        resource = target.resource
        if media_type == bodies.APPLY_PATCH:
            return await self.server_side_apply(request, target)
        schema = schemas.for_resource(resource)
        accepted = [bodies.JSON_PATCH, bodies.MERGE_PATCH]
        if schema is not None:  # upstream has no strategic merge patch for custom resources
            accepted.append(bodies.STRATEGIC_MERGE_PATCH)
        if media_type not in accepted:
            raise errors.UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(accepted + [bodies.APPLY_PATCH])}"
            )
        patch = await bodies.read_document(request, set(accepted))
        return await self.store.update(
            resource, target.namespace, target.name,
            lambda current: self._patched(request, target, media_type, patch, schema, current),
            _context(request, target.subresource))

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
        _check_pinned(target, parse_resource_version(patched["metadata"].get("resourceVersion")),
                      current)
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
        ctx = _context(request, target.subresource)
        try:
            await self.objects.get(resource, target.namespace, target.name)
        except errors.NotFound:
            # The applier owns what it sent, not the defaults and generated fields.
            owned = _applied(resource, None, config, manager, force)
            return await self.store.create(resource, target.namespace, config, ctx,
                                           managed_fields=owned["metadata"].get(
                                               "managedFields") or [])

        async def change(live: dict) -> dict:
            return _applied(resource, live, config, manager, force)

        return await self.store.update(resource, target.namespace, target.name, change, ctx,
                                       applied=True)

    async def delete(self, request: web.Request, target: Target) -> tuple[dict[str, Any], int]:
        options = await self._delete_options(request)
        return await self.store.delete(target.resource, target.namespace, target.name,
                                       options, _context(request))

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = None
        if request.body_exists:
            body = await bodies.read_document(request, bodies.OBJECT_TYPES)
        return queryparams.delete_options(request.query, body)

    async def delete_collection(self, request: web.Request, target: Target) -> dict[str, Any]:
        options = await self._delete_options(request)
        return await self.store.delete_collection(
            target.resource, target.namespace, queryparams.matcher(request.query), options,
            _context(request))
