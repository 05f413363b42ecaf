"""Audit events as upstream's WithAudit builds them: stages and their order, the fields of
each, Status answers, panics, omitted stages, annotations, impersonation, managedFields.
The audit middleware runs in a small aiohttp application (real HTTP on loopback) between
the server's own errors middleware and test handlers; events go to a real AuditLog."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k8py.api import errors
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import audit, auditlog, auditpolicy, bodies, responses
from k8py.server.apiserver.authn import USER_KEY, User
from tests.conftest import eventually

ALICE = User("alice", ("dev",), uid="u-1")
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
- level: None
  nonResourceURLs: [/healthz*]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: Request
  resources: [{group: "", resources: [pods]}]
  omitStages: [RequestReceived]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
  omitManagedFields: false
- level: RequestResponse
  resources: [{group: "", resources: [services]}]
- level: Metadata
"""


@web.middleware
async def as_user(request, handler):
    name = request.headers.get("X-Test-User")
    request[USER_KEY] = ALICE if name == "alice" else None
    return await handler(request)


async def create(request):
    body = await bodies.read_document(request, bodies.OBJECT_TYPES)
    created = {"kind": "ConfigMap", "apiVersion": "v1", **body}
    created["metadata"] = {**body["metadata"], "uid": "x", "managedFields": [{"manager": "m"}]}
    return responses.json_response(created, status=201)


async def patch(request):
    await bodies.read_document(request, {bodies.MERGE_PATCH})
    return responses.json_response({"kind": "Service", "apiVersion": "v1", "metadata": {
        "name": "s", "managedFields": [{"manager": "m"}]}})


async def missing(request):
    raise errors.NotFound('configmaps "missing" not found', name="missing", kind="configmaps")


async def boom(request):
    raise RuntimeError("boom")


async def watch(request):
    if request.query.get("wait"):
        await asyncio.Event().wait()  # until the client goes away
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b'{"type":"ADDED"}\n')
    return response


async def impersonating(request):
    audit.annotate(request, audit.DECISION_ANNOTATION, "allow")
    audit.annotate(request, audit.REASON_ANNOTATION, "because")
    audit.annotate(request, audit.DECISION_ANNOTATION, "forbid")  # the first value stays
    request[audit.IMPERSONATED_USER_KEY] = User("bob", ("team",))
    return responses.json_response({"kind": "Secret", "apiVersion": "v1",
                                    "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}})


@pytest.fixture
async def served(tmp_path):
    path = tmp_path / "audit.log"
    auditor = audit.Auditor(auditpolicy.parse(POLICY), auditlog.AuditLog(str(path)))
    app = web.Application(middlewares=[apiserver.errors_middleware, as_user,
                                       auditor.middleware(apiserver.error_response)])
    app.on_response_prepare.append(audit.on_response_prepare)
    base = "/api/v1/namespaces/default"
    app.router.add_post(base + "/configmaps", create)
    app.router.add_get(base + "/configmaps/missing", missing)
    app.router.add_get(base + "/configmaps/boom", boom)
    app.router.add_patch(base + "/services/s", patch)
    app.router.add_get(base + "/pods", watch)
    app.router.add_get(base + "/secrets/s", impersonating)
    app.router.add_get("/healthz", apiserver.health)
    client = TestClient(TestServer(app))
    await client.start_server()

    def events():
        assert auditor.sink.flush()
        return [json.loads(line) for line in path.read_text().splitlines()]

    try:
        yield client, events
    finally:
        await client.close()
        auditor.close()


async def test_a_create_at_request_response(served):
    client, events = served
    response = await client.post("/api/v1/namespaces/default/configmaps?fieldManager=x",
                                 json={"metadata": {"name": "c1"}, "data": {"a": "<b>"}},
                                 headers={"X-Test-User": "alice", "User-Agent": "kubectl/v1.32",
                                          "X-Forwarded-For": "10.0.0.1, 10.0.0.2"})
    assert response.status == 201
    received, complete = events()
    audit_id = response.headers["Audit-ID"]
    assert [received["stage"], complete["stage"]] == ["RequestReceived", "ResponseComplete"]
    assert list(complete) == ["kind", "apiVersion", "level", "auditID", "stage", "requestURI",
                              "verb", "user", "sourceIPs", "userAgent", "objectRef",
                              "responseStatus", "requestObject", "responseObject",
                              "requestReceivedTimestamp", "stageTimestamp"]
    assert complete["kind"] == "Event" and complete["apiVersion"] == "audit.k8s.io/v1"
    assert complete["auditID"] == received["auditID"] == audit_id
    assert complete["level"] == "RequestResponse" and complete["verb"] == "create"
    assert complete["requestURI"] == "/api/v1/namespaces/default/configmaps?fieldManager=x"
    assert complete["user"] == {"username": "alice", "uid": "u-1",
                                "groups": ["dev", "system:authenticated"]}
    assert complete["sourceIPs"] == ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    assert complete["userAgent"] == "kubectl/v1.32"
    # the URL names no object; the body does
    assert received["objectRef"] == {"resource": "configmaps", "namespace": "default",
                                     "apiVersion": "v1"}
    assert complete["objectRef"] == {"resource": "configmaps", "namespace": "default",
                                     "name": "c1", "apiVersion": "v1"}
    assert complete["responseStatus"] == {"metadata": {}, "code": 201}
    assert complete["requestObject"] == {"metadata": {"name": "c1"}, "data": {"a": "<b>"}}
    assert complete["responseObject"]["metadata"]["managedFields"] == [{"manager": "m"}]
    assert "requestObject" not in received and "responseStatus" not in received
    assert received["stageTimestamp"] == received["requestReceivedTimestamp"] == \
        complete["requestReceivedTimestamp"]
    assert MICRO.match(complete["stageTimestamp"])
    assert complete["stageTimestamp"] >= complete["requestReceivedTimestamp"]


async def test_json_is_as_go_writes_it(served, tmp_path):
    client, events = served
    await client.post("/api/v1/namespaces/default/configmaps",
                      json={"metadata": {"name": "c"}, "data": {"a": "<&>"}})
    events()
    text = (tmp_path / "audit.log").read_text()
    assert '"a":"\\u003c\\u0026\\u003e"' in text and ", " not in text.split('"userAgent"')[0]


async def test_a_status_answer_and_a_panic(served):
    client, events = served
    assert (await client.get("/api/v1/namespaces/default/configmaps/missing")).status == 404
    response = await client.get("/api/v1/namespaces/default/configmaps/boom")
    assert response.status == 500 and response.headers["Audit-ID"]
    _, missing, _, panic = events()
    assert missing["verb"] == "get" and missing["stage"] == "ResponseComplete"
    status = {"metadata": {}, "status": "Failure", "message": 'configmaps "missing" not found',
              "reason": "NotFound", "details": {"name": "missing", "kind": "configmaps"},
              "code": 404}
    assert missing["responseStatus"] == status
    assert missing["responseObject"] == {"kind": "Status", "apiVersion": "v1", **status}
    assert panic["stage"] == "Panic"
    assert panic["responseStatus"] == {"metadata": {}, "status": "Failure",
                                       "message": "APIServer panic'd: boom",
                                       "reason": "InternalError", "code": 500}


async def test_a_patch_is_logged_as_sent_and_managed_fields_omitted(served):
    client, events = served
    await client.patch("/api/v1/namespaces/default/services/s", data=b'{"spec":{"b":1,"a":2}}',
                       headers={"Content-Type": "application/merge-patch+json"})
    _, complete = events()
    assert complete["verb"] == "patch"
    assert complete["requestObject"] == {"spec": {"b": 1, "a": 2}}
    assert complete["responseObject"] == {"kind": "Service", "apiVersion": "v1",
                                          "metadata": {"name": "s"}}
    assert complete["objectRef"] == {"resource": "services", "namespace": "default",
                                     "name": "s", "apiVersion": "v1"}


async def test_a_watch_has_response_started(served):
    client, events = served
    response = await client.get("/api/v1/namespaces/default/pods?watch=true")
    assert await response.read() == b'{"type":"ADDED"}\n'
    started, complete = events()  # RequestReceived omitted by the rule
    assert [started["stage"], complete["stage"]] == ["ResponseStarted", "ResponseComplete"]
    assert started["verb"] == "watch" and started["responseStatus"] == {"metadata": {},
                                                                        "code": 200}
    assert started["level"] == "Request" and complete["responseStatus"]["code"] == 200


async def test_a_watch_left_before_it_answered(served):
    client, events = served
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/api/v1/namespaces/default/pods?watch=true&wait=1", timeout=0.3)

    started, complete = await eventually(lambda: (found := events()) and len(found) == 2
                                         and found, what="the watch's events")
    closed = {"metadata": {}, "status": "Success", "message": "Connection closed early",
              "code": 200}
    assert (started["stage"], started["responseStatus"]) == ("ResponseStarted", closed)
    assert (complete["stage"], complete["responseStatus"]) == ("ResponseComplete", closed)


async def test_annotations_and_impersonation_at_metadata(served):
    client, events = served
    response = await client.get("/api/v1/namespaces/default/secrets/s",
                                headers={"X-Test-User": "alice"})
    assert (await response.json())["data"] == {"k": "c2VjcmV0"}
    received, complete = events()
    assert "annotations" not in received and "impersonatedUser" not in received
    assert complete["annotations"] == {"authorization.k8s.io/decision": "allow",
                                       "authorization.k8s.io/reason": "because"}
    assert complete["user"]["username"] == "alice"
    assert complete["impersonatedUser"] == {"username": "bob",
                                            "groups": ["team", "system:authenticated"]}
    assert complete["level"] == "Metadata"
    assert "responseObject" not in complete and "c2VjcmV0" not in json.dumps(complete)


async def test_level_none_is_not_logged_but_has_an_audit_id(served):
    client, events = served
    response = await client.get("/healthz", headers={"Audit-ID": "mine"})
    assert response.status == 200 and response.headers["Audit-ID"] == "mine"
    other = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f-]{36}", other.headers["Audit-ID"])
    missing = await client.get("/nowhere")  # an unknown path: level Metadata, a 404
    assert missing.status == 404
    received, complete = events()
    assert complete["auditID"] == missing.headers["Audit-ID"]
    assert complete["verb"] == "get" and "objectRef" not in complete
    assert complete["user"] == {"username": "system:anonymous",
                                "groups": ["system:unauthenticated"]}
    assert complete["responseStatus"]["code"] == 404


async def test_a_client_audit_id_is_used(served):
    client, events = served
    await client.get("/api/v1/namespaces/default/configmaps/missing",
                     headers={"Audit-ID": "given-id"})
    assert {event["auditID"] for event in events()} == {"given-id"}
