"""The RBAC authorizer against upstream's own cases: RuleAllows (plugin/pkg/auth/authorizer/
rbac/rbac_test.go), appliesTo and the rule resolver (pkg/registry/rbac/validation/
rule_test.go), and the reasons and resolution errors upstream's authorizer gives.

`Policy` is fed through its informers' caches the way their watch feeds them (`_apply`),
so the cache invalidation on every change is exercised too; no server is involved."""

from __future__ import annotations

from typing import Any

import pytest

from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import ALLOW, NO_OPINION, Attributes
from k8py.server.apiserver.rbac import (Policy, RBACAuthorizer, Rule, _applies,
                                        aggregate_errors, resource_matches, url_matches)


def rule(verbs="", groups=None, resources="", urls="", names="") -> Rule:
    """A rule from comma-separated lists; `groups=""` is the core group, None none."""
    def split(text: str) -> list[str]:
        return text.split(",") if text else []
    return Rule.of({"verbs": split(verbs),
                    "apiGroups": groups.split(",") if groups is not None else [],
                    "resources": split(resources), "nonResourceURLs": split(urls),
                    "resourceNames": split(names)})


def resource(verb: str, group: str = "", res: str = "", sub: str = "", name: str = "",
             namespace: str = "", user: User = User("u")) -> Attributes:
    return Attributes(user, verb, True, group, "v1", res, sub, namespace, name)


def path(verb: str, url: str, user: User = User("u")) -> Attributes:
    return Attributes(user, verb, False, path=url)


# --- RuleAllows -----------------------------------------------------------------------------

@pytest.mark.parametrize("verb,group,res,expected", [
    ("verb1", "group1", "resource1", True), ("verb1", "group2", "resource1", False),
    ("verb1", "group1", "resource2", False), ("verb2", "group1", "resource1", True),
])
def test_star_verb(verb, group, res, expected):
    assert rule("*", "group1", "resource1").allows(resource(verb, group, res)) is expected


@pytest.mark.parametrize("verb,group,res,expected", [
    ("verb1", "group1", "resource1", True), ("verb1", "group2", "resource1", True),
    ("verb1", "group1", "resource2", False), ("verb2", "group1", "resource1", False),
])
def test_star_group(verb, group, res, expected):
    assert rule("verb1", "*", "resource1").allows(resource(verb, group, res)) is expected


@pytest.mark.parametrize("verb,group,res,expected", [
    ("verb1", "group1", "resource1", True), ("verb1", "group1", "resource2", True),
    ("verb1", "group2", "resource1", False), ("verb2", "group1", "resource1", False),
])
def test_star_resource(verb, group, res, expected):
    assert rule("verb1", "group1", "*").allows(resource(verb, group, res)) is expected


def test_tuple_expansion():
    r = rule("verb1,verb2", "group1,group2", "resource1,resource2")
    assert all(r.allows(resource(v, g, x)) for v in ("verb1", "verb2")
               for g in ("group1", "group2") for x in ("resource1", "resource2"))


@pytest.mark.parametrize("group,res,sub,expected", [
    ("group1", "resource1", "subresource1", True),
    ("group2", "resource1", "subresource2", False),
    ("group1", "resource2", "subresource1", False),
    ("group1", "resource1", "", False),  # the subresource rule is not the resource
])
def test_subresource(group, res, sub, expected):
    r = rule("*", "*", "resource1/subresource1")
    assert r.allows(resource("verb1", group, res, sub)) is expected


def test_resource_rule_does_not_reach_its_subresources():
    assert rule("*", "*", "pods").allows(resource("get", "", "pods"))
    assert not rule("*", "*", "pods").allows(resource("get", "", "pods", "status"))


def test_star_slash_subresource():
    r = rule("get", "*", "*/scale")
    assert r.allows(resource("get", "apps", "deployments", "scale"))
    assert r.allows(resource("get", "", "replicationcontrollers", "scale"))
    assert not r.allows(resource("get", "apps", "deployments"))
    assert not r.allows(resource("get", "apps", "deployments", "status"))
    assert not resource_matches(["*/scale"], "deployments", "xscale")


def test_resource_names():
    r = rule("get", "", "secrets", names="a,b")
    assert r.allows(resource("get", "", "secrets", name="a"))
    assert not r.allows(resource("get", "", "secrets", name="c"))
    # a list has no name: a rule with names does not allow it
    assert not r.allows(resource("list", "", "secrets"))
    assert rule("get", "", "secrets").allows(resource("get", "", "secrets", name="any"))


def test_resource_rule_is_not_a_path_rule_and_back():
    assert not rule("get", "*", "*").allows(path("get", "/healthz"))
    assert not rule("get", urls="*").allows(resource("get", "", "pods"))


@pytest.mark.parametrize("verb,url,expected", [
    ("verb1", "/foo", True), ("verb1", "/foo/bar/one", True), ("verb2", "/foo", False),
])
def test_star_nonresource(verb, url, expected):
    assert rule("verb1", urls="*").allows(path(verb, url)) is expected


@pytest.mark.parametrize("url,expected", [
    ("/foo", False), ("/foo/", True), ("/foo/bar", True), ("/foo/bar/one", True),
    ("/foobar", False),
])
def test_star_nonresource_subpath(url, expected):
    assert rule("verb1", urls="/foo/*").allows(path("verb1", url)) is expected


def test_nonresource_urls_match_exactly_or_by_trailing_star():
    assert url_matches("/apis", "/apis")
    assert not url_matches("/apis", "/apis/v1")
    assert not url_matches("/api/*/*", "/api/v1")  # only a trailing star is a wildcard
    assert url_matches("/apis/**", "/apis/v1")  # upstream trims every trailing star


# --- appliesTo ------------------------------------------------------------------------------

@pytest.mark.parametrize("subject,user,groups,namespace,expected", [
    ({"kind": "User", "name": "foobar"}, "foobar", (), "", True),
    ({"kind": "User", "name": "*"}, "foobar", (), "default", False),
    ({"kind": "Group", "name": "foobar"}, "zimzam", ("foobar",), "", True),
    ({"kind": "Group", "name": "foobar"}, "zimzam", ("foobar",), "namespace1", True),
    ({"kind": "Group", "name": "foobar"}, "foobar", (), "", False),  # a group is not a user
    ({"kind": "ServiceAccount", "namespace": "kube-system", "name": "default"},
     "system:serviceaccount:kube-system:default", (), "default", True),
    # a RoleBinding's service account without a namespace is in the binding's namespace
    ({"kind": "ServiceAccount", "name": "default"},
     "system:serviceaccount:ns1:default", (), "ns1", True),
    ({"kind": "ServiceAccount", "name": "default"},
     "system:serviceaccount:ns1:default", (), "ns2", False),
    # ... and in a ClusterRoleBinding (no namespace) it names no one
    ({"kind": "ServiceAccount", "name": "default"},
     "system:serviceaccount::default", (), "", False),
    ({"kind": "Group", "name": "system:unauthenticated"}, "system:anonymous",
     ("system:unauthenticated",), "default", True),
    ({"kind": "Robot", "name": "foobar"}, "foobar", (), "", False),
])
def test_applies(subject, user, groups, namespace, expected):
    assert _applies(subject, user, groups, namespace) is expected


# --- the policy: bindings to roles ----------------------------------------------------------

ADMIN = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
READ_PODS = {"verbs": ["get", "watch"], "apiGroups": ["v1"], "resources": ["pods"]}
READ_SERVICES = {"verbs": ["get", "watch"], "apiGroups": ["v1"], "resources": ["services"]}
WRITE_NODES = {"verbs": ["put", "create", "update"], "apiGroups": ["v1"],
               "resources": ["nodes"]}


def role(name: str, *rules: dict, namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name, "resourceVersion": "1"}
    if namespace:
        metadata["namespace"] = namespace
    return {"metadata": metadata, "rules": list(rules)}


def binding(name: str, kind: str, ref: str, *subjects: str,
            namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name, "resourceVersion": "1"}
    if namespace:
        metadata["namespace"] = namespace
    parsed = []
    for subject in subjects:
        subject_kind, _, subject_name = subject.partition(":")
        entry = {"kind": subject_kind, "name": subject_name}
        if subject_kind == "ServiceAccount" and "/" in subject_name:
            entry["namespace"], entry["name"] = subject_name.split("/")
        parsed.append(entry)
    return {"metadata": metadata, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                              "kind": kind, "name": ref},
            "subjects": parsed}


def policy_of(roles=(), rolebindings=(), clusterroles=(), clusterrolebindings=()) -> Policy:
    """A Policy whose informers never run: objects arrive as their watch would bring them."""
    policy = Policy(None)  # type: ignore[arg-type]  # no client: the caches are fed directly
    for plural, objects in (("roles", roles), ("rolebindings", rolebindings),
                            ("clusterroles", clusterroles),
                            ("clusterrolebindings", clusterrolebindings)):
        for obj in objects:
            policy.informers[plural]._apply("ADDED", obj)
    return policy


@pytest.fixture
def static_roles() -> Policy:
    """upstream's staticRoles1."""
    return policy_of(
        roles=[role("readthings", READ_PODS, READ_SERVICES, namespace="namespace1")],
        clusterroles=[role("cluster-admin", ADMIN), role("write-nodes", WRITE_NODES)],
        rolebindings=[binding("b1", "Role", "readthings", "User:foobar", "Group:group1",
                              namespace="namespace1")],
        clusterrolebindings=[binding("admins", "ClusterRole", "cluster-admin", "User:admin",
                                     "Group:admin")])


@pytest.mark.parametrize("user,groups,namespace,expected", [
    ("foobar", (), "namespace1", [READ_PODS, READ_SERVICES]),
    ("foobar", (), "namespace2", []),
    ("foobar", ("admin",), "", [ADMIN]),  # no namespace: only cluster rules
    ("", (), "", []),
])
def test_rules_for(static_roles, user, groups, namespace, expected):
    rules, problems = static_roles.rules_for(user, groups, namespace)
    assert [r.source for r in rules] == expected and problems == []


def test_cluster_rules_come_before_namespaced_ones(static_roles):
    rules, _ = static_roles.rules_for("foobar", ("admin",), "namespace1")
    assert [r.source for r in rules] == [ADMIN, READ_PODS, READ_SERVICES]


def authorize(policy: Policy, attributes: Attributes):
    return RBACAuthorizer(policy).authorize(attributes)


def test_rolebinding_to_clusterrole_grants_in_its_namespace_only():
    """upstream's first TestAuthorizer case."""
    policy = policy_of(clusterroles=[role("admin", ADMIN)],
                       rolebindings=[binding("b", "ClusterRole", "admin", "User:admin",
                                             "Group:admins", namespace="ns1")])
    admin, joe = User("admin"), User("joe", ("group1", "admins"))
    for allowed in (resource("get", "", "Pods", namespace="ns1", user=admin),
                    resource("watch", "", "Foobar", namespace="ns1", user=joe)):
        assert authorize(policy, allowed)[0] == ALLOW
    for refused in (resource("GET", "", "Pods", namespace="ns2", user=admin),
                    resource("GET", "", "Nodes", user=admin),
                    resource("GET", "", "Pods", namespace="ns2", user=User("a", ("admins",)))):
        assert authorize(policy, refused) == (NO_OPINION, "")


def test_nonresource_bindings():
    """upstream's non-resource-url TestAuthorizer case."""
    policy = policy_of(
        clusterroles=[role("getter", {"verbs": ["get"], "nonResourceURLs": ["/apis"]}),
                      role("any", {"verbs": ["*"], "nonResourceURLs": ["/apis"]}),
                      role("prefix", {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]})],
        clusterrolebindings=[binding("g", "ClusterRole", "getter", "User:foo", "Group:bar"),
                             binding("a", "ClusterRole", "any", "User:admin"),
                             binding("p", "ClusterRole", "prefix", "User:prefixed")])
    foo, bar = User("foo"), User("", ("bar",))
    admin, prefixed = User("admin"), User("prefixed")
    for user, verb, url in ((foo, "get", "/apis"), (bar, "get", "/apis"),
                            (admin, "watch", "/apis"), (prefixed, "get", "/apis/v1"),
                            (prefixed, "get", "/apis/v1/foobar")):
        assert authorize(policy, path(verb, url, user))[0] == ALLOW, (user, verb, url)
    for user, verb, url in ((foo, "watch", "/apis"), (foo, "get", "/api/v1"),
                            (admin, "get", "/api/v1"), (prefixed, "get", "/api/v1")):
        assert authorize(policy, path(verb, url, user))[0] == NO_OPINION, (user, verb, url)


def test_reason_names_the_cluster_role_binding_and_the_subject():
    policy = policy_of(clusterroles=[role("r", ADMIN)],
                       clusterrolebindings=[binding("b", "ClusterRole", "r", "User:x",
                                                    "Group:g")])
    assert authorize(policy, resource("get", "", "pods", user=User("u", ("g",)))) == (
        ALLOW, 'RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to Group "g"')
    assert authorize(policy, resource("get", "", "pods", user=User("x"))) == (
        ALLOW, 'RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "x"')


def test_reason_names_the_role_binding_with_its_namespace():
    policy = policy_of(roles=[role("reader", READ_PODS, namespace="ns")],
                       rolebindings=[binding("b", "Role", "reader", "ServiceAccount:sa",
                                             namespace="ns")])
    account = User("system:serviceaccount:ns:sa")
    assert authorize(policy, resource("get", "v1", "pods", namespace="ns", user=account)) == (
        ALLOW, 'RBAC: allowed by RoleBinding "b/ns" of Role "reader" to ServiceAccount "sa/ns"')


def test_reason_names_a_service_account_of_another_namespace_as_bound():
    policy = policy_of(clusterroles=[role("admin", ADMIN)],
                       rolebindings=[binding("b", "ClusterRole", "admin",
                                             "ServiceAccount:other/sa", namespace="ns")])
    account = User("system:serviceaccount:other:sa")
    assert authorize(policy, resource("get", "", "pods", namespace="ns", user=account)) == (
        ALLOW, 'RBAC: allowed by RoleBinding "b/ns" of ClusterRole "admin" to '
               'ServiceAccount "sa/other"')


def test_reason_names_the_first_subject_that_applies():
    policy = policy_of(clusterroles=[role("r", ADMIN)],
                       clusterrolebindings=[binding("b", "ClusterRole", "r", "Group:g1",
                                                    "User:u", "Group:g2")])
    user = User("u", ("g2",))
    assert authorize(policy, resource("get", "", "pods", user=user))[1].endswith(' to User "u"')


def test_every_authenticated_user_is_in_system_authenticated():
    policy = policy_of(clusterroles=[role("r", {"verbs": ["get"], "nonResourceURLs": ["/x"]})],
                       clusterrolebindings=[binding("b", "ClusterRole", "r",
                                                    "Group:system:authenticated")])
    assert authorize(policy, path("get", "/x", User("someone")))[0] == ALLOW
    assert authorize(policy, path("get", "/x", User("system:anonymous",
                                                    ("system:unauthenticated",))))[0] \
        == NO_OPINION


def test_missing_roles_are_the_reason_when_nothing_allows():
    policy = policy_of(
        clusterrolebindings=[binding("b", "ClusterRole", "gone", "User:u")],
        rolebindings=[binding("rb", "Role", "gone-too", "User:u", namespace="ns")])
    assert authorize(policy, resource("get", "", "pods", user=User("u"))) == (
        NO_OPINION, 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found')
    assert authorize(policy, resource("get", "", "pods", namespace="ns", user=User("u"))) == (
        NO_OPINION, 'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
                    'role.rbac.authorization.k8s.io "gone-too" not found]')


def test_a_missing_role_does_not_hide_what_other_bindings_allow():
    policy = policy_of(
        clusterroles=[role("r", ADMIN)],
        clusterrolebindings=[binding("a", "ClusterRole", "gone", "User:u"),
                             binding("b", "ClusterRole", "r", "User:u")])
    assert authorize(policy, resource("get", "", "pods", user=User("u")))[0] == ALLOW


def test_bindings_not_naming_the_user_report_nothing():
    policy = policy_of(clusterrolebindings=[binding("b", "ClusterRole", "gone", "User:other")])
    assert authorize(policy, resource("get", "", "pods", user=User("u"))) == (NO_OPINION, "")


def test_a_cluster_role_binding_to_a_role_finds_no_role():
    policy = policy_of(roles=[role("r", ADMIN, namespace="ns")],
                       clusterrolebindings=[binding("b", "Role", "r", "User:u")])
    assert authorize(policy, resource("get", "", "pods", namespace="ns", user=User("u"))) == (
        NO_OPINION, 'RBAC: role.rbac.authorization.k8s.io "r" not found')


def test_unknown_role_reference_kind():
    policy = policy_of(clusterrolebindings=[binding("b", "Robot", "r", "User:u")])
    assert authorize(policy, resource("get", "", "pods", user=User("u"))) == (
        NO_OPINION, 'RBAC: unsupported role reference kind: "Robot"')


def test_aggregate_errors_as_upstream_prints_them():
    assert aggregate_errors(["a"]) == "a"
    assert aggregate_errors(["a", "b"]) == "[a, b]"
    # utilerrors' aggregate says a repeated text once, without brackets when one is left
    assert aggregate_errors(["a", "a"]) == "a"
    assert aggregate_errors(["a", "b", "a"]) == "[a, b]"


def test_changes_reach_decisions_at_once():
    policy = policy_of(clusterroles=[role("r", READ_PODS)])
    attributes = resource("get", "v1", "pods", user=User("u"))
    assert authorize(policy, attributes)[0] == NO_OPINION  # cached: no binding
    crb = binding("b", "ClusterRole", "r", "User:u")
    policy.informers["clusterrolebindings"]._apply("ADDED", crb)
    assert authorize(policy, attributes)[0] == ALLOW
    changed = role("r", READ_SERVICES)
    changed["metadata"]["resourceVersion"] = "2"
    policy.informers["clusterroles"]._apply("MODIFIED", changed)
    assert authorize(policy, attributes)[0] == NO_OPINION  # compiled rules dropped too
    policy.informers["clusterroles"]._apply("DELETED", changed)
    assert authorize(policy, attributes) == (
        NO_OPINION, 'RBAC: clusterrole.rbac.authorization.k8s.io "r" not found')


def test_malformed_objects_grant_nothing_and_do_not_fail():
    policy = policy_of(
        clusterroles=[{"metadata": {"name": "r"}, "rules": ["not a rule", ADMIN]}],
        clusterrolebindings=[{"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole",
                                                                    "name": "r"},
                              "subjects": ["junk", {"kind": "User", "name": "u"}]},
                             {"metadata": {"name": "c"}}])
    assert authorize(policy, resource("get", "", "pods", user=User("u")))[0] == ALLOW
    assert authorize(policy, resource("get", "", "pods", user=User("v"))) == (NO_OPINION, "")
