"""The kubelet's authorization questions (upstream's nodeAuthorizerAttributesGetter, v1.33),
its 403 text, bearer tokens in headers, callers from certificates, and how long decisions
are kept (allowed 5 min, denied 30 s). The API server side is `Reviewer`, answering
SubjectAccessReviews from a set of allowed (user, verb, subresource)."""

from __future__ import annotations

import base64

import pytest

from k8py.agent.kubelet.auth import (AuthorizationFailed, Caller, KubeletAuth, TTLCache,
                                     Unauthenticated, bearer_token, certificate_caller,
                                     forbidden_text, request_attributes)
from k8py.api import errors

ALICE = Caller("alice", ("devs", "system:authenticated"))


def mapped(method: str, path: str) -> list[tuple[str, str]]:
    return [(a.verb, a.subresource) for a in request_attributes(ALICE, method, path, "n1")]


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/stats/summary", [("get", "stats")]),
    ("GET", "/stats", [("get", "stats")]),
    ("GET", "/metrics", [("get", "metrics")]),
    ("GET", "/metrics/cadvisor", [("get", "metrics")]),
    ("GET", "/logs/syslog", [("get", "log")]),
    ("POST", "/checkpoint/ns/pod/c", [("create", "checkpoint")]),
    ("GET", "/spec/", [("get", "proxy")]),
    ("GET", "/containerLogs/default/web/main", [("get", "proxy")]),
    ("POST", "/exec/default/web/main", [("create", "proxy")]),
    ("GET", "/exec/default/web/main", [("get", "proxy")]),  # WebSocket: a GET
    ("POST", "/attach/default/web/main", [("create", "proxy")]),
    ("POST", "/portForward/default/web", [("create", "proxy")]),
    ("POST", "/run/default/web/main", [("create", "proxy")]),
    ("GET", "/pods", [("get", "pods"), ("get", "proxy")]),
    ("GET", "/runningpods/", [("get", "pods"), ("get", "proxy")]),
    ("GET", "/healthz", [("get", "healthz"), ("get", "proxy")]),
    ("GET", "/healthz/syncloop", [("get", "healthz"), ("get", "proxy")]),
    ("GET", "/configz", [("get", "configz"), ("get", "proxy")]),
    ("PUT", "/statsx", [("update", "proxy")]),  # not below /stats
    ("PATCH", "/podsx", [("patch", "proxy")]),
    ("DELETE", "/metricsfoo", [("delete", "proxy")]),
    ("HEAD", "/healthz", [("", "healthz"), ("", "proxy")]),  # upstream maps no verb
])
def test_attribute_mapping(method, path, expected):
    assert mapped(method, path) == expected
    attributes = request_attributes(ALICE, method, path, "n1")
    assert {(a.resource, a.version, a.name, a.user) for a in attributes} == {
        ("nodes", "v1", "n1", ALICE)}


def test_forbidden_text_is_upstreams():
    assert forbidden_text(request_attributes(ALICE, "GET", "/pods", "n1")) == (
        "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n")
    assert forbidden_text(request_attributes(ALICE, "POST", "/exec/a/b/c", "n1")) == (
        "Forbidden (user=alice, verb=create, resource=nodes, subresource(s)=[proxy])\n")


def test_bearer_tokens():
    assert bearer_token({"Authorization": "Bearer abc.def"}) == "abc.def"
    assert bearer_token({"Authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"Authorization": "Basic dXNlcg=="}) is None
    assert bearer_token({"Authorization": "Bearer "}) is None
    encoded = base64.urlsafe_b64encode(b"tok?en").decode().rstrip("=")
    assert bearer_token({"Sec-WebSocket-Protocol":
                         f"v4.channel.k8s.io, base64url.bearer.authorization.k8s.io."
                         f"{encoded}"}) == "tok?en"
    assert bearer_token({}) is None


def test_certificate_caller():
    cert = {"subject": ((("organizationName", "system:masters"),),
                        (("organizationName", "ops"),), (("commonName", "kube-apiserver"),))}
    assert certificate_caller(cert) == Caller(
        "kube-apiserver", ("system:masters", "ops", "system:authenticated"))
    assert certificate_caller({}) is None and certificate_caller(None) is None
    assert certificate_caller({"subject": ((("organizationName", "x"),),)}) is None


class Reviewer:
    """The API server's answers to reviews (what a Client's create returns)."""

    def __init__(self, allowed: set[tuple[str, str, str]], tokens: dict[str, dict]):
        self.allowed = allowed
        self.tokens = tokens
        self.asked: list[str] = []
        self.failing = False

    async def create(self, resource, body, namespace=None):
        self.asked.append(resource.plural)
        if self.failing:
            raise errors.ServiceUnavailable("cannot reach the API server")
        if resource.plural == "tokenreviews":
            user = self.tokens.get(body["spec"]["token"])
            return {"status": {"authenticated": True, "user": user} if user else {}}
        spec = body["spec"]
        attributes = spec["resourceAttributes"]
        assert attributes["resource"] == "nodes" and attributes["name"] == "n1"
        return {"status": {"allowed": (spec["user"], attributes["verb"],
                                       attributes["subresource"]) in self.allowed}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


async def test_decisions_are_cached_allowed_five_minutes_denied_thirty_seconds():
    reviewer = Reviewer({("alice", "get", "proxy")}, {})
    clock = Clock()
    auth = KubeletAuth(reviewer, "n1", clock=clock)
    assert await auth.authorize(ALICE, "GET", "/containerLogs/a/b/c") is None
    assert await auth.authorize(ALICE, "GET", "/containerLogs/a/b/c") is None
    assert reviewer.asked == ["subjectaccessreviews"]
    # /pods asks pods (denied), then proxy (allowed, cached already)
    assert await auth.authorize(ALICE, "GET", "/pods") is None
    assert len(reviewer.asked) == 2
    denied = await auth.authorize(ALICE, "POST", "/exec/a/b/c")
    assert denied == ("Forbidden (user=alice, verb=create, resource=nodes, "
                      "subresource(s)=[proxy])\n")
    assert len(reviewer.asked) == 3
    reviewer.allowed.add(("alice", "create", "proxy"))
    clock.now = 29
    assert await auth.authorize(ALICE, "POST", "/exec/a/b/c") == denied  # still cached
    clock.now = 31
    assert await auth.authorize(ALICE, "POST", "/exec/a/b/c") is None
    reviewer.allowed.clear()
    clock.now = 299
    assert await auth.authorize(ALICE, "GET", "/containerLogs/a/b/c") is None
    clock.now = 301
    assert await auth.authorize(ALICE, "GET", "/containerLogs/a/b/c") is not None
    # a review that cannot be made is a 500 with upstream's text, and is not cached
    reviewer.failing = True
    with pytest.raises(AuthorizationFailed, match=r"^Authorization error \(user=alice, "
                       r"verb=delete, resource=nodes, subresource=proxy\)$"):
        await auth.authorize(ALICE, "DELETE", "/x")


async def test_tokens_are_reviewed_and_kept_two_minutes():
    reviewer = Reviewer(set(), {"good": {"username": "bob", "uid": "u1",
                                         "groups": ["system:authenticated"],
                                         "extra": {"k": ["v"]}}})
    clock = Clock()
    auth = KubeletAuth(reviewer, "n1", clock=clock)
    bob = await auth.authenticate(None, {"Authorization": "Bearer good"})
    assert bob == Caller("bob", ("system:authenticated",), "u1", (("k", ("v",)),))
    with pytest.raises(Unauthenticated):
        await auth.authenticate({}, {"Authorization": "Bearer bad"})
    with pytest.raises(Unauthenticated):
        await auth.authenticate({}, {})
    assert reviewer.asked == ["tokenreviews", "tokenreviews"]
    await auth.authenticate(None, {"Authorization": "Bearer good"})
    with pytest.raises(Unauthenticated):
        await auth.authenticate({}, {"Authorization": "Bearer bad"})
    assert len(reviewer.asked) == 2
    del reviewer.tokens["good"]
    clock.now = 121
    with pytest.raises(Unauthenticated):
        await auth.authenticate(None, {"Authorization": "Bearer good"})
    # the API server unreachable: refused, and asked again next time
    reviewer.failing = True
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(None, {"Authorization": "Bearer other"})
    assert reviewer.asked.count("tokenreviews") == 5


def test_ttl_cache_is_bounded():
    cache = TTLCache(size=2, clock=lambda: 0.0)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    cache.put("c", 3, 10)
    assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
