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
    → `impersonation_middleware`: `Impersonate-*` headers, each authorized, replace the
      user (`impersonation`)
    → `flowcontrol.FlowControl`: --max-requests-inflight / --max-mutating-requests-inflight
      seats; over them, per-user queues served in turn (429 when full or after 15 s)
    → `authorization_middleware`: the request's attributes (`authz.request_attributes`) put
      to `--authorization-mode` (`authorization`: system:masters, Node, RBAC); 403 unless
      allowed
    → `metrics.APIServerMetrics.middleware`: upstream's request metrics, served at /metrics
      (a non-resource URL: `get` on /metrics, as the bootstrap `system:monitoring` grants)
    → route: health, version, metrics, discovery, OpenAPI, the service-account issuer's discovery
      (/.well-known/openid-configuration, /openid/v1/jwks), joining agents (/cacerts,
      /v1-k8py/node-credentials: `join`), `k8py secrets-encrypt` (/v1-k8py/encrypt/...:
      `keyrotation`), or `RestHandler` for /api/v1/...
      and /apis/g/v/...
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from k8py import tls
from k8py.api import errors
from k8py.api.resources import Registry
from k8py.client.client import Client
from k8py.server import pki
from k8py.server.apiserver import (admission, audit, authz, bodies, discovery, flowcontrol,
                                   impersonation, join, keyrotation, metrics, metricsapi,
                                   metricsscraper, openapi, openapi_protobuf,
                                   podproxy, responses, serviceips, tokens as sa_tokens)
from k8py.server.apiserver.authorization import Authorization, parse_modes
from k8py.server.apiserver.authn import (USER_KEY, TokenFile, User, authenticate,
                                         is_anonymous_path)
from k8py.server.apiserver.encryptionconfig import Encryption
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.apiserver.rest import RestHandler, parse_target
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.store.backend import Backend

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REGISTRY_KEY = web.AppKey("registry", Registry)
REST_KEY = web.AppKey("rest", RestHandler)
TOKENS_KEY = web.AppKey("tokens", TokenFile)
SERVICE_ACCOUNTS_KEY = web.AppKey("service_accounts", sa_tokens.ServiceAccountTokens)
AUTHORIZATION_KEY = web.AppKey("authorization", Authorization)
#: the authenticated user when the request impersonates another (for the audit log)
IMPERSONATOR_KEY = web.RequestKey("impersonator", User)
# k8py's own endpoints for joining agents: outside the Kubernetes API, checked by their
# handlers (`join`)
UNAUTHORIZED_PATHS = ("/cacerts", "/v1-k8py")
FLOW_CONTROL_KEY = web.AppKey("flow_control", flowcontrol.FlowControl)
AUDITOR_KEY = web.AppKey("auditor", audit.Auditor)
METRICS_KEY = web.AppKey("metrics", metrics.APIServerMetrics)
SCRAPER_KEY = web.AppKey("metrics_scraper", metricsscraper.Scraper)


def _status_response(error: errors.StatusError) -> web.Response:
    retry = error.details.get("retryAfterSeconds") if error.details else None
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return responses.json_response(error.status(), status=error.code, headers=headers)


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


def check_dot_segments(request: web.Request) -> None:
    """Refuse a path with a `.` or `..` segment (also percent-encoded). aiohttp resolves them
    before routing, so `DELETE .../secrets/x/..` would become a delete of the whole
    collection, and `.../secrets/..` a delete of the namespace; upstream never resolves
    them: a name `..` is its 400 "Name parameter invalid", anything else does not exist."""
    segments = urllib.parse.unquote(request.raw_path.partition("?")[0]).split("/")
    if "." not in segments and ".." not in segments:
        return
    last = segments[-1]
    if last in (".", ".."):
        raise errors.BadRequest(f"Name parameter invalid: \"{last}\": may not be '{last}'")
    raise errors.NotFound("the server could not find the requested resource")


class ProtocolErrors(logging.LoggerAdapter):
    """aiohttp's server logger: a request it cannot parse (a line over the limit, a bad
    header, a malformed URL) is the client's mistake, answered 400 by aiohttp; logged at
    debug in one line, not as an error with a traceback. Anything else stays an error."""

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.debug("unparsable request: %s", exc_info)
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


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


@web.middleware
async def impersonation_middleware(request: web.Request, handler: Handler
                                   ) -> web.StreamResponse:
    user = request.get(USER_KEY)
    if user is not None and impersonation.requested(request.headers):
        authorization = request.app[AUTHORIZATION_KEY]
        request[IMPERSONATOR_KEY] = user
        request[USER_KEY] = await impersonation.impersonate(user, request.headers,
                                                            authorization.check)
        request[audit.IMPERSONATED_USER_KEY] = request[USER_KEY]
    return await handler(request)


@web.middleware
async def authorization_middleware(request: web.Request, handler: Handler
                                   ) -> web.StreamResponse:
    user = request.get(USER_KEY)
    path = request.path
    if user is not None and not any(path == p or path.startswith(p + "/")
                                    for p in UNAUTHORIZED_PATHS):
        attributes = authz.request_attributes(user, request.method, path, request.query)
        decision, reason = await request.app[AUTHORIZATION_KEY].decide(attributes)
        audit.annotate(request, audit.DECISION_ANNOTATION,
                       "allow" if decision == authz.ALLOW else "forbid")
        audit.annotate(request, audit.REASON_ANNOTATION, reason)
        if decision != authz.ALLOW:
            raise authz.forbidden(attributes, reason)
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
    check_dot_segments(request)
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
             authorization_mode: str = "Node,RBAC",
             disable_admission_plugins: Collection[str] = (),
             encryption: Encryption | None = None,
             encryption_state: str | None = None,
             auditor: audit.Auditor | None = None,
             metric_resolution: float | None = None) -> web.Application:
    """The application; services get ClusterIPs from `service_cidr` and NodePorts from
    `node_port_range` (both ends included). Service-account tokens are signed with the key
    in the file `service_account_key` (`pki.ensure_service_key`); without one, with a key
    made for this process only. pods/log, exec, attach and portforward reach kubelets with
    `kubelet_client` (without it they are 503s). With `join_pki`, agents join with the
    token: /cacerts and /v1-k8py/node-credentials (`join`). `authorization_mode` is
    `--authorization-mode` (`authorization.parse_modes`); `disable_admission_plugins`
    names admission plugins to leave out (`admission.default_chain`). `encryption` seals
    the objects it names at rest; `k8py secrets-encrypt` reaches it at
    /v1-k8py/encrypt/... (`keyrotation`, its stage kept in the file `encryption_state`).
    With an `auditor`, requests are audited (`audit`); it is closed with the
    application. With a `metric_resolution` (seconds) it serves `metrics.k8s.io`
    (`metricsapi`) from kubelets scraped that often (`metricsscraper`)."""
    registry = registry or Registry()
    # A little headroom over the 3 MiB limit so that bodies.read_raw says it, not aiohttp.
    flow_control = flowcontrol.FlowControl(max_requests_inflight,
                                           max_mutating_requests_inflight)
    auditing = [auditor.middleware(error_response)] if auditor is not None else []
    app_metrics = metrics.APIServerMetrics(flow_control)
    app = web.Application(middlewares=[errors_middleware, authn_middleware, *auditing,
                                       impersonation_middleware, flow_control.middleware,
                                       authorization_middleware, app_metrics.middleware],
                          client_max_size=bodies.MAX_BODY_BYTES + 1)
    app[FLOW_CONTROL_KEY] = flow_control
    app[METRICS_KEY] = app_metrics
    app.on_response_prepare.append(audit.on_response_prepare)  # Audit-ID on every answer
    if auditor is not None:
        app[AUDITOR_KEY] = auditor

        async def close_audit_log(app: web.Application) -> None:
            await asyncio.to_thread(auditor.close)
        app.on_cleanup.append(close_audit_log)
    app[REGISTRY_KEY] = registry
    objects = ObjectStore(store, encryption)
    objects.observe = app_metrics.observe_storage
    key = sa_tokens.SigningKey.load(service_account_key) if service_account_key else None
    service_accounts = sa_tokens.ServiceAccountTokens(objects, registry, key,
                                                      cluster_domain=cluster_domain)
    app[REST_KEY] = RestHandler(registry, objects, serviceips.ServiceIPs(
        objects, service_cidr, node_port_range), service_accounts,
        admission.default_chain(registry, objects, disable_admission_plugins))
    app[REST_KEY].pod_proxy = podproxy.PodProxy(objects, registry.get("", "v1", "pods"),
                                                registry.get("", "v1", "nodes"), kubelet_client)
    app[REST_KEY].token_file = tokens
    if metric_resolution is not None:
        _serve_metrics(app, objects, registry, kubelet_client, metric_resolution)
    rest = app[REST_KEY]
    authorization = Authorization(parse_modes(authorization_mode),
                                  lambda user: Client(InProcessTransport(rest, user=user)))
    rest.use_authorization(authorization)
    app[AUTHORIZATION_KEY] = authorization

    async def start_authorization(app: web.Application) -> None:
        authorization.start()

    async def stop_authorization(app: web.Application) -> None:
        await authorization.stop()

    app.on_startup.append(start_authorization)
    app.on_cleanup.append(stop_authorization)

    async def keep_ranges_repaired(app: web.Application):
        task = asyncio.create_task(rest.service_ips.keep_repaired())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    app.cleanup_ctx.append(keep_ranges_repaired)
    app[TOKENS_KEY] = tokens
    app[SERVICE_ACCOUNTS_KEY] = service_accounts
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, health)
        app.router.add_get(path + "/{check:.*}", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", app_metrics.handler)
    app.router.add_get("/openapi/v3", openapi_v3_root)
    app.router.add_get("/openapi/v3/{path:.+}", openapi_v3_document)
    app.router.add_get("/openapi/v2", openapi_v2)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/openid/v1/jwks", jwks)
    if join_pki is not None:
        join.add_routes(app, join_pki, objects, registry)
    rest = app[REST_KEY]
    keyrotation.add_routes(app, keyrotation.KeyRotation(
        encryption, objects, registry, encryption_state,
        ttl_of=lambda resource: rest.store.strategies.for_resource(resource).ttl))
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


def _serve_metrics(app: web.Application, objects: ObjectStore, registry: Registry,
                   kubelet_client: podproxy.KubeletClient | None, resolution: float) -> None:
    """metrics.k8s.io in the registry and the REST handler; the scraper runs with the app."""
    if registry.get(metricsapi.GROUP, metricsapi.VERSION, "pods") is None:
        metricsapi.install(registry)
    scraper = metricsscraper.Scraper(objects, registry.get("", "v1", "nodes"), kubelet_client,
                                     resolution)
    app[REST_KEY].metrics = metricsapi.MetricsAPI(objects, registry, scraper.points)
    app[SCRAPER_KEY] = scraper

    async def scrape(app: web.Application):
        task = asyncio.create_task(scraper.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(scrape)


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    return tls.server_context(cert, key, client_ca, require_client_cert=False)


TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds, as upstream's Go server
# Seconds a connection may sit without a complete request: a half-sent request (or an idle
# keep-alive connection) is closed after this, as upstream's ReadHeaderTimeout (32 s) does.
REQUEST_HEADER_TIMEOUT = 32.0
# Bytes of a request line: long label and field selectors fit (Go allows 1 MiB of headers;
# aiohttp's default of 8 KiB would refuse URLs upstream serves)
MAX_REQUEST_LINE = 64 * 1024


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
                           keepalive_timeout=REQUEST_HEADER_TIMEOUT, handler_cancellation=True,
                           max_line_size=MAX_REQUEST_LINE,
                           logger=ProtocolErrors(logging.getLogger("aiohttp.server"), {}))
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
