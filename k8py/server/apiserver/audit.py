"""The API audit log: upstream's `audit.k8s.io/v1` Events for the requests the audit policy
(`auditpolicy`) picks, written as JSON lines by `auditlog.AuditLog`.

Where it sits (upstream's filter order): errors → authentication → **audit** →
impersonation → in-flight limit → authorization → routes. So the policy sees the
authenticated user, and refusals by the in-flight limit or the authorizer are audited.
Without `--audit-policy-file` and `--audit-log-path` there is no audit middleware at all;
with them, a request the policy puts at level None costs its RequestInfo and the rule walk,
nothing more: no event is built.

Every response carries an `Audit-ID` header (the request's own `Audit-ID` if it sent one,
else a new UUID), audited or not, as upstream's WithAuditInit (`on_response_prepare`).

Stages, as upstream's WithAudit emits them:
- RequestReceived when the audit middleware starts (after authentication);
- ResponseStarted when the response's headers go out, only for long-running requests
  (watch, proxy; log, exec, attach, portforward: `RequestInfo.long_running`);
- ResponseComplete when the handler is done (for a watch: when the stream ends);
- Panic instead of ResponseComplete when the handler raised something that is not an API
  error (answered 500), with `APIServer panic'd: <error>`;
- a request refused by authentication (401) gives one ResponseStarted event with an empty
  user, as upstream's WithFailedAuthenticationAudit (`Auditor.unauthenticated`).
A rule's `omitStages` (and the policy's) drop stages.

What an event holds, field for field as upstream fills it: level, auditID, stage,
requestURI (path and query as sent), verb (`requestinfo`), user (as authenticated; the
anonymous user of the health endpoints is `system:anonymous`), impersonatedUser, sourceIPs
(X-Forwarded-For, X-Real-Ip, then the peer), userAgent (cut at 1024 characters),
objectRef (resource requests; a create's or update's body fills in name, namespace, uid and
resourceVersion when the URL has none), responseStatus (the code; for a `Status` answer its
status, message, reason and details), requestObject (level Request and up: the decoded body,
or a patch as sent), responseObject (RequestResponse: the JSON answer; never a watch's or a
log's stream), requestReceivedTimestamp and stageTimestamp (RFC 3339 with microseconds),
annotations. Secrets are logged at whatever level the policy says, as upstream: policies
should put `secrets` (and `configmaps`, `tokenreviews`) at Metadata, as upstream's examples do.

Hooks for the rest of the server (all no-ops on requests that are not audited):
- `annotate(request, key, value)`: an event annotation, e.g. the authorizer's
  `authorization.k8s.io/decision` (`allow`/`forbid`) and `authorization.k8s.io/reason`,
  or PodSecurity's; the first value for a key wins, as upstream. `request[ANNOTATIONS_KEY]`
  is the dict itself, present only on audited requests.
- `request[IMPERSONATED_USER_KEY]`: the impersonation step (which runs after this
  middleware and puts the impersonated user at `USER_KEY`) sets it to that user; the event
  then names the authenticated user as `user` and this one as `impersonatedUser`.
- `log_request_object(request, document, patch=...)`: `bodies.read_document` reports each
  decoded body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from k8py.api import encoding, errors
from k8py.server.apiserver import auditlog, auditpolicy
from k8py.server.apiserver.auditpolicy import METADATA, NONE, RANK, REQUEST, REQUEST_RESPONSE
from k8py.server.apiserver.admission import AUDIT_ANNOTATIONS_KEY
from k8py.server.apiserver.authn import USER_KEY, User
from k8py.server.apiserver.requestinfo import RequestInfo, request_info

log = logging.getLogger(__name__)

AUDIT_ID_HEADER = "Audit-ID"
DECISION_ANNOTATION = "authorization.k8s.io/decision"
REASON_ANNOTATION = "authorization.k8s.io/reason"
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
MAX_USER_AGENT = 1024


class Record:
    """One audited request's event, filled in as the request goes, emitted per stage."""

    def __init__(self, sink: auditlog.AuditLog, request: web.Request, info: RequestInfo,
                 decision: auditpolicy.Decision, user: str, received: float):
        self.sink = sink
        self.request = request
        self.level = decision.level
        self.omit_stages = decision.omit_stages
        self.omit_managed_fields = decision.omit_managed_fields
        self.long_running = info.long_running
        self.audit_id = request.headers.get(AUDIT_ID_HEADER) or str(uuid.uuid4())
        agent = request.headers.get("User-Agent", "")
        if len(agent) > MAX_USER_AGENT:
            agent = agent[:MAX_USER_AGENT] + "...TRUNCATED"
        # what no stage changes, encoded once: the event up to its stage, and from its
        # requestURI to its user; sourceIPs and userAgent
        self._head = (f'{{"kind":"Event","apiVersion":"{auditpolicy.API_VERSION}","level":'
                      f'"{self.level}","auditID":{encoding.text(self.audit_id)}')
        self._who = (f'"requestURI":{encoding.text(request.raw_path)},"verb":'
                     f'{encoding.text(info.verb)},"user":{user}')
        origin: dict[str, Any] = {}
        ips = source_ips(request)
        if ips:
            origin["sourceIPs"] = ips
        if agent:
            origin["userAgent"] = agent
        self._origin = encoding.text(origin)[1:-1] if origin else ""
        self.received = _micro_time(received)
        self.object_ref: dict[str, str] | None = None
        if info.resource_request:
            self.object_ref = {"resource": info.resource, "namespace": info.namespace,
                               "name": info.name, "uid": "", "apiGroup": info.api_group,
                               "apiVersion": info.api_version, "resourceVersion": "",
                               "subresource": info.subresource}
        self.status: dict[str, Any] | None = None
        self.request_object: str | None = None  # JSON text, encoded when captured
        self.response_object: str | None = None
        self.annotations: dict[str, str] = {}
        self.code_seen = False  # upstream's processCode: once
        self.done = False

    # --- what the request tells along the way ---

    def request_body(self, document: Any, patch: bool) -> None:
        if not patch and isinstance(document, dict) and self.object_ref is not None:
            metadata = document.get("metadata")
            if isinstance(metadata, dict):
                for field in ("namespace", "name", "uid", "resourceVersion"):
                    value = metadata.get(field)
                    if not self.object_ref[field] and isinstance(value, str):
                        self.object_ref[field] = value
        if RANK[self.level] >= RANK[REQUEST] and document is not None:
            if not patch:
                document = encoding.ordered(self._without_managed_fields(document))
            self.request_object = encoding.text(document)

    def respond(self, response: web.StreamResponse) -> None:
        """The answer the handler gave (not yet sent, or already streamed)."""
        body = getattr(response, "body", None)
        if not isinstance(body, bytes) or not response.content_type.startswith(
                "application/json") or not body.startswith((b"{", b"[")):
            return
        if body.startswith(b'{"kind":"Status"'):
            try:
                status = json.loads(body)
            except ValueError:
                status = {}
            self.status = {"metadata": {}, **{k: status[k] for k in (
                "status", "message", "reason", "details", "code") if k in status}}
        if self.level == REQUEST_RESPONSE and self.request.path.startswith("/api"):
            text = body.decode().rstrip("\n")
            if self.omit_managed_fields and b'"managedFields"' in body:
                text = encoding.text(self._without_managed_fields(json.loads(text)))
            self.response_object = text

    def started(self, code: int) -> None:
        """The response's headers go out (upstream's processCode)."""
        if self.code_seen:
            return
        self.code_seen = True
        if self.status is None:
            self.status = {"metadata": {}}
        self.status["code"] = code
        if self.long_running:
            self.emit("ResponseStarted")

    def finish(self) -> None:
        if self.done:
            return
        if self.status is None:  # nothing was ever sent: upstream's faked success
            self.status = {"metadata": {}, "status": "Success",
                           "message": "Connection closed early", "code": 200}
            if self.long_running:
                self.emit("ResponseStarted")
        self.emit("ResponseComplete")
        self.done = True

    def panic(self, exc: BaseException) -> None:
        self.status = {"metadata": {}, "status": "Failure",
                       "message": f"APIServer panic'd: {exc}", "reason": "InternalError",
                       "code": 500}
        self.emit("Panic")
        self.done = True

    # --- the event ---

    def emit(self, stage: str) -> None:
        if stage in self.omit_stages:
            return
        stamp = self.received if stage == "RequestReceived" else _micro_time(time.time())
        self.sink.write(self.line(stage, stamp))

    def line(self, stage: str, stamp: str) -> bytes:
        """The event at `stage` as one JSON line, fields in the Go struct's order."""
        parts = [self._head, ',"stage":"', stage, '",', self._who]
        impersonated = self.request.get(IMPERSONATED_USER_KEY)
        if impersonated is not None:
            parts += [',"impersonatedUser":', encoding.text(impersonated.info())]
        if self._origin:
            parts += [",", self._origin]
        if self.object_ref is not None:
            parts += [',"objectRef":',
                      encoding.text({k: v for k, v in self.object_ref.items() if v})]
        if self.status is not None:
            parts += [',"responseStatus":', encoding.text(self.status)]
        if self.request_object is not None:
            parts += [',"requestObject":', self.request_object]
        if self.response_object is not None:
            parts += [',"responseObject":', self.response_object]
        parts += [',"requestReceivedTimestamp":"', self.received, '","stageTimestamp":"', stamp,
                  '"']
        if self.annotations:  # a Go map: keys sorted
            parts += [',"annotations":', encoding.text(dict(sorted(self.annotations.items())))]
        parts.append("}\n")
        return "".join(parts).encode()

    def _without_managed_fields(self, document: Any) -> Any:
        """document without metadata.managedFields (its items' too, a Table's rows'
        objects too) when the policy says omitManagedFields; never modified in place."""
        if not self.omit_managed_fields or not isinstance(document, dict):
            return document
        out = dict(document)
        metadata = out.get("metadata")
        if isinstance(metadata, dict) and "managedFields" in metadata:
            out["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
        if isinstance(out.get("items"), list):
            out["items"] = [self._without_managed_fields(item) for item in out["items"]]
        if out.get("kind") == "Table" and isinstance(out.get("rows"), list):
            out["rows"] = [{**row, "object": self._without_managed_fields(row["object"])}
                           if isinstance(row, dict) and "object" in row else row
                           for row in out["rows"]]
        return out


RECORD_KEY = web.RequestKey("audit_record", Record)
# one key with admission's, so what plugins annotate (PodSecurity) reaches the events
ANNOTATIONS_KEY = AUDIT_ANNOTATIONS_KEY
IMPERSONATED_USER_KEY = web.RequestKey("impersonated_user", User)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[web.Request, Exception], web.StreamResponse]


class Auditor:
    """The policy and the sink; `middleware` audits requests, `unauthenticated` the ones
    authentication refused."""

    def __init__(self, policy: auditpolicy.Policy, sink: auditlog.AuditLog):
        self.policy = policy
        self.sink = sink

    def start(self, request: web.Request) -> Record | None:
        received = time.time()
        user = request.get(USER_KEY)
        info = request_info(request.method, request.path, request.query)
        decision = self.policy.evaluate(user or ANONYMOUS, info)
        if decision.level == NONE:
            return None
        record = Record(self.sink, request, info, decision, _user_text(user), received)
        request[RECORD_KEY] = record
        request[ANNOTATIONS_KEY] = record.annotations
        record.emit("RequestReceived")
        return record

    def unauthenticated(self, request: web.Request) -> None:
        """A request authentication refused: one ResponseStarted event (upstream's
        WithFailedAuthenticationAudit, with the 401 Status the answer carries)."""
        info = request_info(request.method, request.path, request.query)
        decision = self.policy.evaluate(None, info)
        if decision.level == NONE:
            return
        record = Record(self.sink, request, info, decision, "{}", time.time())
        request[RECORD_KEY] = record
        status = errors.Unauthorized("Unauthorized").status()
        record.status = {"metadata": {}, **{k: v for k, v in status.items()
                                            if k not in ("kind", "apiVersion", "metadata")}}
        if record.level == REQUEST_RESPONSE:
            record.response_object = encoding.text(status)
        record.code_seen = record.done = True
        record.emit("ResponseStarted")

    def middleware(self, answer_error: ErrorAnswer):
        """The audit middleware; `answer_error` turns what a handler raised into the
        answer the client gets (`app.error_response`), so the event records that answer."""

        @web.middleware
        async def audit_middleware(request: web.Request, handler: Handler
                                   ) -> web.StreamResponse:
            record = self.start(request)
            if record is None:
                return await handler(request)
            try:
                try:
                    response = await handler(request)
                except (asyncio.CancelledError, ConnectionError):
                    raise  # the client left: the event says what was sent, if anything
                except Exception as exc:
                    response = answer_error(request, exc)
                    if response.status == 500 and not isinstance(exc, errors.StatusError):
                        record.panic(exc)
                        return response
                record.respond(response)
                if not response.prepared:
                    record.started(response.status)
                return response
            finally:
                record.finish()

        return audit_middleware

    def close(self) -> None:
        self.sink.close()


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: the Audit-ID header; an audited one's code (and, for long-running
    requests, its ResponseStarted event) once its headers go out."""
    record = request.get(RECORD_KEY)
    if AUDIT_ID_HEADER not in response.headers:
        response.headers[AUDIT_ID_HEADER] = record.audit_id if record is not None else (
            request.headers.get(AUDIT_ID_HEADER) or str(uuid.uuid4()))
    if record is not None and not record.done:
        record.started(response.status)


def annotate(request: Any, key: str, value: str) -> None:
    """An annotation on the request's audit event, if it has one. The first value set for
    a key stays (upstream logs a warning and keeps it)."""
    annotations = request.get(ANNOTATIONS_KEY)
    if annotations is None:
        return
    current = annotations.get(key)
    if current is not None and current != value:
        log.warning('audit: annotation %r is already %r, not setting it to %r', key, current,
                    value)
        return
    annotations[key] = value


def log_request_object(request: Any, document: Any, *, patch: bool = False) -> None:
    """A decoded request body (`bodies.read_document`): it completes objectRef, and at level
    Request and up it is the event's requestObject (a patch as sent, not merged)."""
    record = request.get(RECORD_KEY)
    if record is not None and RANK[record.level] >= RANK[METADATA]:
        record.request_body(document, patch)


def records_response(request: Any) -> bool:
    """Whether the request's answer goes into its audit event (level RequestResponse)."""
    record = request.get(RECORD_KEY)
    return record is not None and record.level == REQUEST_RESPONSE


def source_ips(request: web.Request) -> list[str]:
    """Upstream's SourceIPs: X-Forwarded-For's addresses, X-Real-Ip unless listed already,
    then the peer unless it is the last one listed. (All but the last can be forged.)"""
    ips: list[str] = []
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        ips = [ip for ip in (_ip(part) for part in forwarded.split(",")) if ip]
    real = request.headers.get("X-Real-Ip")
    if real:
        real = _ip(real)
        if real and real not in ips:
            ips.append(real)
    peer = request.remote  # the socket's address: an IP already
    if peer and (not ips or ips[-1] != peer):
        ips.append(peer)
    return ips


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return ""


_users: dict[User | None, str] = {}  # user → its UserInfo's JSON text (a user asks again)


def _user_text(user: User | None) -> str:
    """The event's user (the anonymous user for None: the health endpoints')."""
    text = _users.get(user)
    if text is None:
        info = {"username": ANONYMOUS.name, "groups": list(ANONYMOUS.groups)} \
            if user is None else user.info()
        text = encoding.text(info)
        if len(_users) >= 4096:
            _users.clear()
        if user is None or not user.extra:  # extras do not take part in a user's hash
            _users[user] = text
    return text


_second: list = [None, ""]  # the last whole second formatted, and its text


def _micro_time(moment: float) -> str:
    """metav1.MicroTime's JSON: RFC 3339 in UTC with microseconds."""
    second = int(moment)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((moment - second) * 1e6):06d}Z"


def from_flags(policy_file: str | None, log_path: str | None, *, max_age: int = 0,
               max_backups: int = 0, max_size: int = 0, log_format: str = "json"
               ) -> Auditor | None:
    """The auditor for the --audit-* flags, or None when they ask for no auditing (no policy
    file, or no log path: upstream records nothing then). Raises auditpolicy.PolicyError
    for a bad policy and OSError when the log file cannot be made."""
    if log_format != "json":
        raise ValueError(f"audit log format {log_format!r} is not supported: k8py writes "
                         "json only")
    policy = auditpolicy.load(policy_file) if policy_file else None
    if not log_path:
        return None
    if policy is None:
        if log_path != "-":
            auditlog.ensure_file(log_path)  # as upstream, which makes the file all the same
        log.info("no audit policy file: no events are recorded in the audit log")
        return None
    return Auditor(policy, auditlog.AuditLog(log_path, max_size_mb=max_size,
                                             max_backups=max_backups, max_age_days=max_age))
