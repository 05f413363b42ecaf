"""The API server: an aiohttp application over HTTPS, and the daemon that serves it.

Request flow:
    TLS (client certificate optional, verified against the cluster CA)
    → `errors_middleware`: any `StatusError` becomes its `Status` body; anything unexpected is
      logged and answered 500 (never a traceback to the client)
    → `authn_middleware`: user from certificate or bearer token (the token file, or a
      service-account token: `tokens`); anonymous only for /healthz, /livez, /readyz, /version
    → the audit middleware (`audit`, with --audit-policy-file and --audit-log-path): events
      per stage for the requests the policy picks (a 401 is audited by `authn_middleware`);
      every answer carries an `Audit-ID` header
    → `InFlightLimit`: --max-requests-inflight / --max-mutating-requests-inflight (429)
    → route: health, version, discovery, OpenAPI, the service-account issuer's discovery
      (/.well-known/openid-configuration, /openid/v1/jwks), joining agents (/cacerts,
      /v1-k8py/node-credentials: `join`), or `RestHandler` for /api/v1/...
      and /apis/g/v/...
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from k8py import tls
from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server import pki
from k8py.server.apiserver import (audit, bodies, discovery, join, openapi, openapi_protobuf,
                                   podproxy, responses, serviceips, tokens as sa_tokens)
from k8py.server.apiserver.authn import USER_KEY, TokenFile, authenticate, is_anonymous_path
from k8py.server.apiserver.rest import RestHandler, parse_target
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.store.backend import Backend

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REGISTRY_KEY = web.AppKey("registry", Registry)
REST_KEY = web.AppKey("rest", RestHandler)
TOKENS_KEY = web.AppKey("tokens", TokenFile)
SERVICE_ACCOUNTS_KEY = web.AppKey("service_accounts", sa_tokens.ServiceAccountTokens)
AUDITOR_KEY = web.AppKey("auditor", audit.Auditor)


def _status_response(error: errors.StatusError) -> web.Response:
    retry = error.details.get("retryAfterSeconds") if error.details else None
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return responses.json_response(error.status(), status=error.code, headers=headers)


# what upstream's max-in-flight filter lets pass uncounted: long-running requests, and the
# privileged group
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "log", "portforward", "proxy"})
PRIVILEGED_GROUP = "system:masters"
TOO_MANY = "Too many requests, please try again later."


class InFlightLimit:
    """`--max-requests-inflight` and `--max-mutating-requests-inflight`, as upstream's
    WithMaxInFlightLimit: requests being served at once, reads and writes counted apart; one
    more is a 429 with Retry-After: 1 at once (nothing queues). Watches, exec, attach, logs,
    port-forward and proxy are long-running and not counted; neither is system:masters.
    0 means no limit."""

    def __init__(self, reads: int, writes: int):
        self.limits = {False: reads, True: writes}
        self.serving = {False: 0, True: 0}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        user = request.get(USER_KEY)
        if _long_running(request) or (user is not None and PRIVILEGED_GROUP in user.groups):
            return await handler(request)
        mutating = request.method not in ("GET", "HEAD", "OPTIONS")
        limit = self.limits[mutating]
        if limit and self.serving[mutating] >= limit:
            raise errors.TooManyRequests(TOO_MANY, retry_after=1)
        self.serving[mutating] += 1
        try:
            return await handler(request)
        finally:
            self.serving[mutating] -= 1


def _long_running(request: web.Request) -> bool:
    segments = request.path.split("/")
    return request.query.get("watch") in ("true", "1") or "watch" in segments[:5] or \
        segments[-1] in LONG_RUNNING_SUBRESOURCES or "proxy" in segments


class Disconnects:
    """Clients that leave before their answer is complete: each logged at debug, and at
    most one INFO line a minute saying how many, so a flood of them is one line, not
    thousands of tracebacks."""

    SUMMARY_INTERVAL = 60.0

    def __init__(self) -> None:
        self.count = 0  # since the last summary
        self._since = time.monotonic()

    def record(self, request: web.Request) -> None:
        log.debug("client disconnected during %s %s", request.method, request.path)
        self.count += 1
        now = time.monotonic()
        if now - self._since >= self.SUMMARY_INTERVAL:
            log.info("%d client(s) disconnected before their response was complete in the "
                     "last %.0f s", self.count, now - self._since)
            self.count, self._since = 0, now


disconnects = Disconnects()


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer to a request whose handler raised exc: a `StatusError` as its `Status`;
    aiohttp's own errors (unknown route, body too large, ...) as upstream's; a client that
    went away as nothing; anything else logged and a 500 (never a traceback to the
    client). Re-raises what is not an error to answer (aiohttp's redirects)."""
    if isinstance(exc, errors.StatusError):
        return _status_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status == 404:
            return _status_response(errors.NotFound("the server could not find the requested "
                                                    "resource"))
        if exc.status == 413:
            return _status_response(errors.RequestEntityTooLarge(
                "Request entity too large: limit is 3145728"))
        if exc.status == 405:
            return _status_response(errors.MethodNotAllowed(
                "the server does not allow this method on the requested resource"))
        raise exc
    if isinstance(exc, ConnectionError):  # the client went away mid-request: not our error
        disconnects.record(request)
        return web.Response(status=499)  # nobody reads it; aiohttp drops it quietly
    if isinstance(exc, RequestPayloadError):
        return _status_response(errors.BadRequest(f"the request body could not be read: "
                                                  f"{exc}"))
    log.error("internal error serving %s %s", request.method, request.path, exc_info=exc)
    return _status_response(errors.InternalError("an internal error occurred"))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return error_response(request, exc)


@web.middleware
async def authn_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    user = await authenticate(request, request.app[TOKENS_KEY],
                              request.app[SERVICE_ACCOUNTS_KEY])
    if user is None and not is_anonymous_path(request.path):
        auditor = request.app.get(AUDITOR_KEY)
        if auditor is not None:
            auditor.unauthenticated(request)
        raise errors.Unauthorized("Unauthorized")
    request[USER_KEY] = user
    return await handler(request)


def _aggregated_response(body: dict) -> web.Response:
    # Bytes, so aiohttp sends the content type exactly as kubectl compares it.
    return responses.json_response(body, headers={"Content-Type":
                                                 discovery.AGGREGATED_CONTENT_TYPE})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok", content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    return responses.json_response(discovery.version_info())


async def core_root(request: web.Request) -> web.Response:
    if discovery.wants_aggregated(request.headers.get("Accept", "")):
        body = discovery.aggregated(request.app[REGISTRY_KEY], legacy=True)
        return _aggregated_response(body)
    return responses.json_response(discovery.api_versions())


async def groups_root(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    if discovery.wants_aggregated(request.headers.get("Accept", "")):
        body = discovery.aggregated(registry, legacy=False)
        return _aggregated_response(body)
    return responses.json_response(discovery.api_group_list(registry))


async def group_root(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    group = request.match_info["group"]
    listing = [g for g in discovery.api_group_list(registry)["groups"] if g["name"] == group]
    if not listing:
        raise errors.NotFound("the server could not find the requested resource")
    return responses.json_response({"kind": "APIGroup", "apiVersion": "v1", **listing[0]})


async def resources(request: web.Request) -> web.StreamResponse:
    """Everything under /api/v1/ and /apis/<group>/<version>/."""
    registry = request.app[REGISTRY_KEY]
    group = request.match_info.get("group", "")
    version = request.match_info["version"]
    if not registry.has_group_version(group, version):
        raise errors.NotFound("the server could not find the requested resource")
    tail = request.match_info.get("tail", "")
    parts = [p for p in tail.split("/") if p]
    if not parts:
        if request.method != "GET":
            raise errors.MethodNotAllowed("the server does not allow this method")
        return responses.json_response(discovery.api_resource_list(registry, group, version))
    target = parse_target(registry, group, version, parts)
    return await request.app[REST_KEY].handle(request, target)


async def openapi_v3_root(request: web.Request) -> web.Response:
    return responses.json_response(openapi.v3_root(request.app[REGISTRY_KEY]))


async def openapi_v3_document(request: web.Request) -> web.Response:
    body = openapi.v3_document(request.app[REGISTRY_KEY], request.match_info["path"])
    if body is None:
        raise errors.NotFound("the server could not find the requested resource")
    return web.Response(body=body, content_type="application/json")


async def openapi_v2(request: web.Request) -> web.Response:
    # client-go asks for protobuf only and has no JSON fallback; the Python client asks JSON
    media = openapi.v2_media_type(request.headers.get("Accept", ""))
    if media is None:
        raise errors.NotAcceptable(
            f"only {openapi.V2_JSON} and {openapi_protobuf.CONTENT_TYPE} are served")
    body = openapi.v2_document(request.app[REGISTRY_KEY], protobuf=media != openapi.V2_JSON)
    return web.Response(body=body, content_type=media)


async def openid_configuration(request: web.Request) -> web.Response:
    # upstream points jwks_uri at the server's external address; ours is the one asked
    body = request.app[SERVICE_ACCOUNTS_KEY].openid_configuration(
        f"https://{request.host}/openid/v1/jwks")
    return responses.json_response(body, headers={"Cache-Control": "public, max-age=3600"})


async def jwks(request: web.Request) -> web.Response:
    return responses.json_response(request.app[SERVICE_ACCOUNTS_KEY].jwks(),
                                   headers={"Content-Type": "application/jwk-set+json",
                                            "Cache-Control": "public, max-age=3600"})


def make_app(store: Backend, tokens: TokenFile, registry: Registry | None = None, *,
             service_cidr: str | ipaddress.IPv4Network = serviceips.SERVICE_CIDR,
             node_port_range: tuple[int, int] = serviceips.NODE_PORT_RANGE,
             service_account_key: str | None = None,
             cluster_domain: str = "cluster.local",
             kubelet_client: podproxy.KubeletClient | None = None,
             join_pki: pki.PKI | None = None,
             max_requests_inflight: int = 400,
             max_mutating_requests_inflight: int = 200,
             auditor: audit.Auditor | None = None) -> web.Application:
    """The application; services get ClusterIPs from `service_cidr` and NodePorts from
    `node_port_range` (both ends included). Service-account tokens are signed with the key
    in the file `service_account_key` (`pki.ensure_service_key`); without one, with a key
    made for this process only. pods/log, exec, attach and portforward reach kubelets with
    `kubelet_client` (without it they are 503s). With `join_pki`, agents join with the
    token: /cacerts and /v1-k8py/node-credentials (`join`). With an `auditor`, requests
    are audited (`audit`); it is closed with the application."""
    registry = registry or Registry()
    # A little headroom over the 3 MiB limit so that bodies.read_raw says it, not aiohttp.
    in_flight = InFlightLimit(max_requests_inflight, max_mutating_requests_inflight)
    auditing = [auditor.middleware(error_response)] if auditor is not None else []
    app = web.Application(middlewares=[errors_middleware, authn_middleware, *auditing,
                                       in_flight.middleware],
                          client_max_size=bodies.MAX_BODY_BYTES + 1)
    app.on_response_prepare.append(audit.on_response_prepare)  # Audit-ID on every answer
    if auditor is not None:
        app[AUDITOR_KEY] = auditor

        async def close_audit_log(app: web.Application) -> None:
            await asyncio.to_thread(auditor.close)
        app.on_cleanup.append(close_audit_log)
    app[REGISTRY_KEY] = registry
    objects = ObjectStore(store)
    key = sa_tokens.SigningKey.load(service_account_key) if service_account_key else None
    service_accounts = sa_tokens.ServiceAccountTokens(objects, registry, key,
                                                      cluster_domain=cluster_domain)
    app[REST_KEY] = RestHandler(registry, objects, serviceips.ServiceIPs(
        objects, service_cidr, node_port_range), service_accounts)
    app[REST_KEY].pod_proxy = podproxy.PodProxy(objects, registry.get("", "v1", "pods"),
                                                registry.get("", "v1", "nodes"), kubelet_client)
    app[REST_KEY].token_file = tokens
    app[TOKENS_KEY] = tokens
    app[SERVICE_ACCOUNTS_KEY] = service_accounts
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, health)
        app.router.add_get(path + "/{check:.*}", health)
    app.router.add_get("/version", version)
    app.router.add_get("/openapi/v3", openapi_v3_root)
    app.router.add_get("/openapi/v3/{path:.+}", openapi_v3_document)
    app.router.add_get("/openapi/v2", openapi_v2)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/openid/v1/jwks", jwks)
    if join_pki is not None:
        join.add_routes(app, join_pki, objects, registry)
    # the official clients ask for the roots with a trailing slash (`/apis/`)
    for path in ("/api", "/api/"):
        app.router.add_get(path, core_root)
    for path in ("/apis", "/apis/"):
        app.router.add_get(path, groups_root)
    app.router.add_get("/apis/{group}", group_root)
    app.router.add_route("*", "/api/{version:v1}", resources)
    app.router.add_route("*", "/api/{version:v1}/{tail:.*}", resources)
    app.router.add_route("*", "/apis/{group}/{version}", resources)
    app.router.add_route("*", "/apis/{group}/{version}/{tail:.*}", resources)
    return app


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    return tls.server_context(cert, key, client_ca, require_client_cert=False)


TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds, as upstream's Go server
# Seconds a connection may sit without a complete request: a half-sent request (or an idle
# keep-alive connection) is closed after this, as upstream's ReadHeaderTimeout (32 s) does.
REQUEST_HEADER_TIMEOUT = 32.0


async def serve(app: web.Application, host: str, port: int, context: ssl.SSLContext,
                ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled. Slow and dead clients are cut off: a TLS handshake that does
    not finish in TLS_HANDSHAKE_TIMEOUT, a request whose headers are not complete in
    REQUEST_HEADER_TIMEOUT (aiohttp's keep-alive timer, armed from the connection's start),
    a body not sent in `bodies.BODY_TIMEOUT`, a watcher that stops reading
    (`watchserving.WRITE_TIMEOUT`)."""
    # handler_cancellation: a client that goes away takes its handler with it at once (an
    # idle watch of a vanished client would otherwise live until its next event); writes
    # shield themselves (`RestHandler.handle`), so what a client sent is written whole.
    tls.bound_read_buffers()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2,
                           keepalive_timeout=REQUEST_HEADER_TIMEOUT, handler_cancellation=True)
    await runner.setup()
    server = None
    try:
        # the loop's own server, not a TCPSite: only it takes a TLS handshake timeout
        server = await asyncio.get_running_loop().create_server(
            runner.server, host, port, ssl=context, reuse_address=True, backlog=1024,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        log.info("API server listening on https://%s:%d", host, port)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()
