"""Who may call the kubelet's HTTPS server, decided as upstream's kubelet does in webhook mode
(`--authentication-token-webhook`, `--authorization-mode=Webhook`, anonymous off, as k3s
runs it).

Authentication (`KubeletAuth.authenticate`), first that answers:
- a client certificate the TLS layer verified against the cluster CA: user = its CN,
  groups = its O values;
- a bearer token (`Authorization: Bearer …`, or a WebSocket subprotocol
  `base64url.bearer.authorization.k8s.io.<token>`): a TokenReview to the API server, its
  answer (either way) cached for 2 minutes by the token's SHA-256, never the token;
- nothing: 401 `Unauthorized` (also when the TokenReview could not be made).
Every authenticated user is in `system:authenticated`, as the API server's TokenReview
answer has it and as upstream's x509 authenticator leaves to the group adder.

Authorization (`request_attributes`, `KubeletAuth.authorize`): upstream's
nodeAuthorizerAttributesGetter (v1.33, KubeletFineGrainedAuthz on): resource `nodes`,
name = this node, verb from the HTTP method (POST create, GET get, PUT update, PATCH
patch, DELETE delete, anything else "": a WebSocket upgrade is a GET, so exec over
WebSocket is `get`, as upstream), subresource by path: `/stats` stats, `/metrics` metrics,
`/logs` log, `/checkpoint` checkpoint, everything else proxy (exec, attach, portForward,
run, containerLogs, spec…); `/pods`, `/runningpods`, `/healthz`, `/configz` first try
pods, pods, healthz, configz and fall back to proxy. Each is a SubjectAccessReview to the
API server, cached 5 minutes when allowed and 30 seconds when denied (upstream's kubelet
defaults); the first allowed wins. All denied: 403 with upstream's text
`Forbidden (user=u, verb=get, resource=nodes, subresource(s)=[proxy])`. A review that
fails: 500 `Authorization error (user=…, verb=…, resource=nodes, subresource=…)`.

Both answers are plain text, as upstream's (`WriteErrorString`). The caches are bounded
(oldest out first) and keyed by everything the API server's answer depends on.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)

TOKENREVIEWS = builtin("authentication.k8s.io/v1", "tokenreviews")
SUBJECTACCESSREVIEWS = builtin("authorization.k8s.io/v1", "subjectaccessreviews")

TOKEN_CACHE_TTL = 120.0  # --authentication-token-webhook-cache-ttl
ALLOWED_CACHE_TTL = 300.0  # --authorization-webhook-cache-authorized-ttl
DENIED_CACHE_TTL = 30.0  # --authorization-webhook-cache-unauthorized-ttl
CACHE_SIZE = 4096
AUTHENTICATED = "system:authenticated"
WEBSOCKET_TOKEN_PREFIX = "base64url.bearer.authorization.k8s.io."

VERBS = {"POST": "create", "GET": "get", "PUT": "update", "PATCH": "patch",
         "DELETE": "delete"}
# path → subresource; the first that holds the path (or is it) decides
SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"),
                ("/checkpoint", "checkpoint"))
# paths with a finer subresource tried before proxy (KubeletFineGrainedAuthz)
FINE_GRAINED = (("/pods", "pods"), ("/healthz", "healthz"), ("/configz", "configz"),
                ("/statusz", "statusz"), ("/runningpods", "pods"))


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated caller, as a SubjectAccessReview names it."""
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One authorization question (upstream's authorizer.AttributesRecord, resource kind)."""
    user: Caller
    verb: str
    subresource: str
    name: str
    resource: str = "nodes"
    version: str = "v1"


class Unauthenticated(Exception):
    """No identity: 401."""


class AuthorizationFailed(Exception):
    """The review could not be made: 500 with upstream's text."""


def _holds(path: str, prefix: str) -> bool:
    """upstream's isSubpath: `path` is `prefix` or below it."""
    prefix = prefix.rstrip("/")
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def request_attributes(user: Caller, method: str, path: str,
                       node_name: str) -> list[Attributes]:
    """The questions a request asks, in the order they are tried."""
    verb = VERBS.get(method, "")
    subresources = [sub for prefix, sub in FINE_GRAINED if _holds(path, prefix)][:1]
    subresources.append(next((sub for prefix, sub in SUBRESOURCES if _holds(path, prefix)),
                             "proxy"))
    return [Attributes(user, verb, sub, node_name) for sub in subresources]


def forbidden_text(attributes: list[Attributes]) -> str:
    first = attributes[0]
    subresources = " ".join(a.subresource for a in attributes)
    return (f"Forbidden (user={first.user.name}, verb={first.verb}, "
            f"resource={first.resource}, subresource(s)=[{subresources}])\n")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request: the Authorization header, else a WebSocket
    subprotocol carrying it (how browsers' WebSockets send one)."""
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(WEBSOCKET_TOKEN_PREFIX):
            encoded = protocol[len(WEBSOCKET_TOKEN_PREFIX):]
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except ValueError:
                return None
            return token or None
    return None


def certificate_caller(peercert: Mapping[str, Any] | None) -> Caller | None:
    """The caller a verified client certificate names (CN, O), as `ssl` reports it."""
    if not peercert:
        return None
    fields = [(key, value) for rdn in peercert.get("subject", ()) for key, value in rdn]
    name = next((value for key, value in fields if key == "commonName"), "")
    if not name:
        return None
    groups = tuple(value for key, value in fields if key == "organizationName")
    return Caller(name, tuple(dict.fromkeys((*groups, AUTHENTICATED))))


class TTLCache:
    """key → value, each kept for its own time; the oldest entry leaves when full."""

    def __init__(self, size: int = CACHE_SIZE, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self.clock() + ttl, value)


class KubeletAuth:
    """Authentication and authorization for one node's kubelet, over `client` (the
    kubelet's own credentials towards the API server)."""

    def __init__(self, client: Client, node_name: str, *,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.node_name = node_name
        self.tokens = TTLCache(clock=clock)
        self.decisions = TTLCache(clock=clock)

    async def authenticate(self, peercert: Mapping[str, Any] | None,
                           headers: Mapping[str, str]) -> Caller:
        caller = certificate_caller(peercert)
        if caller is not None:
            return caller
        token = bearer_token(headers)
        if token is None:
            raise Unauthenticated()
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self.tokens.get(key)
        if cached is None:
            cached = await self._review_token(token)
            self.tokens.put(key, cached, TOKEN_CACHE_TTL)
        if cached is False:
            raise Unauthenticated()
        return cached

    async def _review_token(self, token: str) -> Caller | bool:
        try:
            review = await self.client.create(TOKENREVIEWS, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}})
        except errors.StatusError as exc:
            # not cached: the next request asks again
            log.warning("TokenReview failed: %s", type(exc).__name__)
            raise Unauthenticated() from None
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return False
        user = status.get("user") or {}
        extra = tuple(sorted((k, tuple(v)) for k, v in (user.get("extra") or {}).items()))
        return Caller(user.get("username", ""), tuple(user.get("groups") or ()),
                      user.get("uid", ""), extra)

    async def authorize(self, caller: Caller, method: str, path: str) -> str | None:
        """None when allowed, else the 403 text; AuthorizationFailed if a review failed."""
        attributes = request_attributes(caller, method, path, self.node_name)
        for attribute in attributes:
            allowed = self.decisions.get(attribute)
            if allowed is None:
                allowed = await self._review_access(attribute)
                self.decisions.put(attribute, allowed,
                                   ALLOWED_CACHE_TTL if allowed else DENIED_CACHE_TTL)
            if allowed:
                return None
        return forbidden_text(attributes)

    async def _review_access(self, attribute: Attributes) -> bool:
        user = attribute.user
        spec: dict[str, Any] = {"resourceAttributes": {
            "verb": attribute.verb, "version": attribute.version,
            "resource": attribute.resource, "subresource": attribute.subresource,
            "name": attribute.name}, "user": user.name}
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        try:
            review = await self.client.create(SUBJECTACCESSREVIEWS, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec})
        except errors.StatusError as exc:
            log.warning("SubjectAccessReview for %s failed: %s", user.name, exc)
            raise AuthorizationFailed(
                f"Authorization error (user={user.name}, verb={attribute.verb}, "
                f"resource={attribute.resource}, subresource={attribute.subresource})"
            ) from None
        return bool((review.get("status") or {}).get("allowed"))

