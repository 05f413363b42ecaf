"""The authorizer contract: a user's groups as the authorizers see them, the union's first
decision, upstream's 403 texts (responsewriters.ForbiddenStatusError and NewForbidden) and
the attributes read from an HTTP request (RequestInfoFactory's cases)."""

from __future__ import annotations

import pytest

from k8py.api import errors
from k8py.server.apiserver import authz
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import (ALLOW, DENY, NO_OPINION, Attributes, Union, forbidden,
                                         request_attributes)


@pytest.mark.parametrize("user,groups", [
    (User("u"), ("system:authenticated",)),
    (User("u", ("g",)), ("g", "system:authenticated")),
    (User("u", ("system:authenticated", "g")), ("system:authenticated", "g")),
    (User("system:anonymous", ("system:unauthenticated",)), ("system:unauthenticated",)),
    (User("system:anonymous"), ()),
    (User("u", ("system:unauthenticated",)), ("system:unauthenticated",)),
])
def test_groups_include_system_authenticated_for_the_authenticated(user, groups):
    assert Attributes(user, "get").groups() == groups


class Fixed:
    def __init__(self, decision: str, reason: str = ""):
        self.decision, self.reason, self.asked = decision, reason, 0

    def authorize(self, attributes):
        self.asked += 1
        return self.decision, self.reason


def test_union_first_decision_wins_and_later_members_are_not_asked():
    last = Fixed(ALLOW)
    assert Union([Fixed(NO_OPINION, "a"), Fixed(DENY, "no"), last]).authorize(
        Attributes(User("u"), "get")) == (DENY, "no")
    assert last.asked == 0
    assert Union([Fixed(NO_OPINION), Fixed(ALLOW, "yes")]).authorize(
        Attributes(User("u"), "get")) == (ALLOW, "yes")


def test_union_without_a_decision_keeps_every_reason():
    assert Union([Fixed(NO_OPINION, "a"), Fixed(NO_OPINION), Fixed(NO_OPINION, "b")]).authorize(
        Attributes(User("u"), "get")) == (NO_OPINION, "a\nb")


def test_privileged_group():
    assert authz.PrivilegedGroup().authorize(
        Attributes(User("x", ("system:masters",)), "delete")) == (ALLOW, "")
    assert authz.PrivilegedGroup().authorize(Attributes(User("x"), "get")) == (NO_OPINION, "")


def res(verb, resource, name="", namespace="", group="", sub="", user="alice") -> Attributes:
    return Attributes(User(user), verb, True, group, "v1", resource, sub, namespace, name)


@pytest.mark.parametrize("attributes,reason,message", [
    (res("get", "pods", "p", "ns"), "",
     'pods "p" is forbidden: User "alice" cannot get resource "pods" in API group "" in the '
     'namespace "ns"'),
    (res("list", "pods", namespace="ns"), "",
     'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the '
     'namespace "ns"'),
    (res("list", "nodes"), "",
     'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the '
     "cluster scope"),
    (res("create", "deployments", "d", "ns", "apps", "scale"), "",
     'deployments.apps "d" is forbidden: User "alice" cannot create resource '
     '"deployments/scale" in API group "apps" in the namespace "ns"'),
    (res("get", "secrets", "s", "ns"), "no relationship",
     'secrets "s" is forbidden: User "alice" cannot get resource "secrets" in API group "" '
     'in the namespace "ns": no relationship'),
    (Attributes(User("alice"), "get", False, path="/metrics"), "",
     'forbidden: User "alice" cannot get path "/metrics"'),
    (Attributes(User("alice"), "post", False, path="/x"), "RBAC: r",
     'forbidden: User "alice" cannot post path "/x": RBAC: r'),
    # upstream's sanitizer: the sentence never reads as HTML; the reason is left as it is
    (Attributes(User("a<b>&c"), "get", False, path="/<script>"), "<r>",
     'forbidden: User "a&lt;b&gt;&amp;c" cannot get path "/&lt;script&gt;": <r>'),
])
def test_forbidden_messages(attributes, reason, message):
    error = forbidden(attributes, reason)
    assert isinstance(error, errors.Forbidden) and error.code == 403
    assert error.message == message
    assert error.status().get("details", {}).get("kind") == (attributes.resource or None)


def test_check_and_allowed():
    attributes = res("get", "pods", "p", "ns")
    authz.check(None, attributes)  # no authorizer: everything is allowed
    authz.check(Fixed(ALLOW), attributes)
    assert authz.allowed(None, attributes) and authz.allowed(Fixed(ALLOW), attributes)
    assert not authz.allowed(Fixed(NO_OPINION), attributes)
    with pytest.raises(errors.Forbidden) as caught:
        authz.check(Union([Fixed(NO_OPINION, "why")]), attributes)
    assert caught.value.message.endswith(': why')


@pytest.mark.parametrize("method,path,query,expected", [
    ("GET", "/api/v1/namespaces/other/pods/foo", {},
     (True, "get", "", "v1", "pods", "", "other", "foo")),
    ("GET", "/api/v1/namespaces/other/pods", {},
     (True, "list", "", "v1", "pods", "", "other", "")),
    ("GET", "/api/v1/pods", {"watch": "true"}, (True, "watch", "", "v1", "pods", "", "", "")),
    ("GET", "/api/v1/watch/namespaces/other/pods/foo", {},
     (True, "watch", "", "v1", "pods", "", "other", "foo")),
    ("GET", "/api/v1/namespaces/other/pods", {"fieldSelector": "metadata.name=foo"},
     (True, "list", "", "v1", "pods", "", "other", "foo")),
    ("POST", "/apis/apps/v1/namespaces/ns/deployments", {},
     (True, "create", "apps", "v1", "deployments", "", "ns", "")),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
     (True, "update", "apps", "v1", "deployments", "scale", "ns", "d")),
    ("DELETE", "/api/v1/namespaces/ns/pods", {},
     (True, "deletecollection", "", "v1", "pods", "", "ns", "")),
    ("PATCH", "/api/v1/nodes/n1/status", {}, (True, "patch", "", "v1", "nodes", "status", "",
                                              "n1")),
    ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token", {},
     (True, "create", "", "v1", "serviceaccounts", "token", "ns", "sa")),
    ("GET", "/api/v1/namespaces/ns", {}, (True, "get", "", "v1", "namespaces", "", "ns",
                                          "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {},
     (True, "update", "", "v1", "namespaces", "finalize", "ns", "ns")),
    ("GET", "/apis/apps/v1", {}, (False, "get", "", "", "", "", "", "")),
    ("HEAD", "/healthz", {}, (False, "head", "", "", "", "", "", "")),
])
def test_request_attributes(method, path, query, expected):
    attributes = request_attributes(User("u"), method, path, query)
    assert (attributes.resource_request, attributes.verb, attributes.api_group,
            attributes.api_version, attributes.resource, attributes.subresource,
            attributes.namespace, attributes.name) == expected
    assert attributes.path == path and attributes.user == User("u")
