"""Escalation checks against upstream: Covers/BreakdownRule (component-helpers' policy_
comparator_test.go), CompactRules and CompactString's Go formatting, and the admission
plugin's escalate/bind shortcuts and refusals (pkg/registry/rbac/*/policybased)."""

from __future__ import annotations

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server.apiserver import admission, authz
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.rbac import RBACAuthorizer, Rule
from k8py.server.apiserver.rbacescalation import (RBACEscalation, breakdown, compact,
                                                  compact_string, covers, missing_rules)

from tests.unit.server.test_rbac import binding, policy_of, role


def missing(owner: list[dict], servant: list[dict]) -> list[dict]:
    return missing_rules([Rule.of(r) for r in owner], servant)


def r(verbs, groups=None, resources=None, names=None, urls=None) -> dict:
    out: dict = {"verbs": verbs}
    for key, value in (("apiGroups", groups), ("resources", resources),
                       ("resourceNames", names), ("nonResourceURLs", urls)):
        if value is not None:
            out[key] = value
    return out


# --- Covers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("owner,servant,uncovered", [
    ([r(["get"], ["v1"], ["builds"])], [r(["get"], ["v1"], ["builds"])], []),
    ([r(["get"], ["v1"], ["*/scale"])], [r(["get"], ["v1"], ["foo/scale"])], []),
    ([r(["delete"], ["v1"], ["deployments"]), r(["delete"], ["v1"], ["builds"]),
      r(["update"], ["v1"], ["builds", "deployments"])],
     [r(["delete", "update"], ["v1"], ["builds", "deployments"])], []),
    ([r(["delete", "update"], ["v1"], ["builds", "deployments"]),
      r(["delete"], ["v1"], ["pods"])],
     [r(["delete", "update"], ["v1"], ["builds", "deployments", "pods"])],
     [r(["update"], ["v1"], ["pods"])]),
    ([r(["get"], ["*"], ["roles"])], [r(["get"], ["group1", "group2"], ["roles"])], []),
    ([r(["get"], ["dummy-group"], ["roles"])], [r(["get"], ["*"], ["roles"])],
     [r(["get"], ["*"], ["roles"])]),
    ([r(["get"], ["*"], ["roles"])], [r(["get"], ["*"], ["roles"])], []),
    ([r(["*"], ["v1"], ["roles"])], [r(["watch", "list"], ["v1"], ["roles"])], []),
    ([r(["get", "list", "watch", "create", "update", "delete", "exec"], ["v1"], ["roles"])],
     [r(["*"], ["v1"], ["roles"])], [r(["*"], ["v1"], ["roles"])]),
    ([r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["resourcegroup:deployments"])], []),
    ([r(["get"], ["v1"], ["roles", "resourcegroup:deployments"])],
     [r(["get"], ["v1"], ["*"])], [r(["get"], ["v1"], ["*"])]),
    ([r(["get"], ["v1"], ["pods"], names=[])], [r(["get"], ["v1"], ["pods"], ["foo", "bar"])],
     []),
    ([r(["get"], ["v1"], ["pods"], ["foo", "bar"])], [r(["get"], ["v1"], ["pods"], [])],
     [r(["get"], ["v1"], ["pods"])]),
    ([r(["*"], urls=["/apis"])], [r(["*"], urls=["/apis"])], []),
    ([r(["*"], urls=["*"])], [r(["*"], urls=["/apis", "/apis/v1", "/"])], []),
    ([r(["*"], urls=["/apis/*"])], [r(["get"], urls=["/apis", "/apis/v1"])],
     [r(["get"], urls=["/apis"])]),
    ([r(["*"], urls=["/apis/*"])], [r(["get"], urls=["/apis/v1/foo", "/apis/v1"])], []),
    ([r(["get"], ["v1"], ["builds"], urls=["/apis"])],
     [r(["get"], ["v1"], ["builds"], urls=["/apis"])], []),
    ([r(["get"], ["v1"], ["builds"])], [r(["get"], ["v1"], ["builds"], urls=["/apis"])],
     [r(["get"], urls=["/apis"])]),
])
def test_covers(owner, servant, uncovered):
    assert missing(owner, servant) == uncovered


@pytest.mark.parametrize("owner,requested,expected", [
    ("*", "", True), ("*", "/", True), ("*", "/api", True), ("/*", "", False),
    ("/*", "/", True), ("/*", "/foo", True), ("/api", "/api", True), ("/apis", "/api", False),
    ("/api/v1", "/api", False), ("/api/v1", "/api/v1", True), ("/api/*", "/api/v1", True),
    ("/api/*", "/api", False), ("/api/*/*", "/api/v1", False), ("/*/v1/*", "/api/v1", False),
    ("/api/**", "/api/v1", True),  # strings.TrimRight trims every star
])
def test_non_resource_url_covers(owner, requested, expected):
    assert covers(Rule.of(r(["get"], urls=[owner])), r(["get"], urls=[requested])) is expected


def test_breakdown_one_verb_group_resource_and_name_each():
    assert breakdown(r(["get", "list"], ["", "apps"], ["pods"], ["a"], ["/x"])) == [
        r(["get"], [""], ["pods"], ["a"]), r(["list"], [""], ["pods"], ["a"]),
        r(["get"], ["apps"], ["pods"], ["a"]), r(["list"], ["apps"], ["pods"], ["a"]),
        r(["get"], urls=["/x"]), r(["list"], urls=["/x"])]


# --- compaction and upstream's text ---------------------------------------------------------

def test_compact_merges_verbs_of_simple_rules_only():
    pieces = [r(["get"], [""], ["secrets"]), r(["list"], [""], ["secrets"]),
              r(["get"], [""], ["secrets"], ["one"]), r(["get"], urls=["/x"]),
              r(["watch"], ["apps"], ["secrets"])]
    assert sorted(map(compact_string, compact(pieces))) == [
        '{APIGroups:[""], Resources:["secrets"], ResourceNames:["one"], Verbs:["get"]}',
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}',
        '{APIGroups:["apps"], Resources:["secrets"], Verbs:["watch"]}',
        '{NonResourceURLs:["/x"], Verbs:["get"]}']


def test_compact_appends_as_upstream():
    # a verb missing twice (two rules asking the same) is listed twice, as upstream's append
    assert compact([r(["get"], [""], ["pods"])] * 2) == [r(["get", "get"], [""], ["pods"])]


def test_compact_string_is_go_quoting():
    assert compact_string(r(["get"], [""], ['we"ird\\'])) == \
        r'{APIGroups:[""], Resources:["we\"ird\\"], Verbs:["get"]}'
    assert compact_string({"verbs": []}) == "{}"


# --- the admission plugin -------------------------------------------------------------------

ROLES = builtin("rbac.authorization.k8s.io/v1", "roles")
CLUSTER_ROLES = builtin("rbac.authorization.k8s.io/v1", "clusterroles")
ROLE_BINDINGS = builtin("rbac.authorization.k8s.io/v1", "rolebindings")
CLUSTER_ROLE_BINDINGS = builtin("rbac.authorization.k8s.io/v1", "clusterrolebindings")
SECRETS = r(["get", "list"], [""], ["secrets"])
PODS = r(["get"], [""], ["pods"])
EVERYTHING = r(["*"], ["*"], ["*"])


def plugin_for(*grants: dict, clusterroles=(), extra_bindings=()) -> RBACEscalation:
    """User `u` holds `grants` cluster-wide (ClusterRole `held`)."""
    policy = policy_of(
        clusterroles=[role("held", *grants), *clusterroles],
        clusterrolebindings=[binding("held", "ClusterRole", "held", "User:u"),
                             *extra_bindings])
    return RBACEscalation(policy, authz.Union([authz.PrivilegedGroup(),
                                              RBACAuthorizer(policy)]))


def write(resource, obj: dict, operation=admission.CREATE, old=None, user=User("u", ("g",)),
          namespace=None) -> admission.Attributes:
    return admission.Attributes(operation, resource, None, namespace, obj["metadata"]["name"],
                                obj, old, user)


def new_role(name: str, *rules: dict, namespace: str | None = None) -> dict:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"metadata": metadata, "rules": list(rules)}


async def test_a_role_within_what_the_writer_holds_is_allowed():
    await plugin_for(SECRETS, PODS).validate(write(ROLES, new_role("r", SECRETS, namespace="ns"),
                                                   namespace="ns"))


async def test_a_role_beyond_what_the_writer_holds_is_refused_with_upstreams_message():
    plugin = plugin_for(PODS)
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(ROLES, new_role("r", SECRETS, PODS,
                                                    r(["get"], urls=["/metrics"]),
                                                    namespace="ns"), namespace="ns"))
    assert caught.value.code == 403
    assert caught.value.message == (
        'roles.rbac.authorization.k8s.io "r" is forbidden: user "u" '
        '(groups=["g" "system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}\n'
        '{NonResourceURLs:["/metrics"], Verbs:["get"]}')


async def test_resolution_errors_follow_the_missing_rules():
    plugin = plugin_for(PODS, extra_bindings=[binding("x", "ClusterRole", "gone", "User:u")])
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(CLUSTER_ROLES, new_role("c", SECRETS)))
    assert caught.value.message.endswith(
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}; resolution errors: '
        '[clusterrole.rbac.authorization.k8s.io "gone" not found]')


async def test_system_masters_and_escalate_skip_the_check():
    plugin = plugin_for(PODS)
    masters = User("m", ("system:masters",))
    await plugin.validate(write(CLUSTER_ROLES, new_role("c", EVERYTHING), user=masters))
    escalator = plugin_for(r(["escalate"], ["rbac.authorization.k8s.io"], ["clusterroles"]))
    await escalator.validate(write(CLUSTER_ROLES, new_role("c", EVERYTHING)))


async def test_escalate_on_a_named_role_covers_updates_not_creates():
    """upstream's RoleEscalationAuthorized asks with the URL's name: a create has none."""
    plugin = plugin_for(r(["escalate"], ["rbac.authorization.k8s.io"], ["clusterroles"],
                          ["c"]))
    old = new_role("c", PODS)
    await plugin.validate(write(CLUSTER_ROLES, new_role("c", EVERYTHING), admission.UPDATE,
                                old))
    with pytest.raises(errors.Forbidden):
        await plugin.validate(write(CLUSTER_ROLES, new_role("c", EVERYTHING)))


async def test_only_garbage_collector_fields_changing_is_not_checked():
    plugin = plugin_for(PODS)
    old = new_role("c", EVERYTHING)
    new = {**old, "metadata": {**old["metadata"], "finalizers": ["x"],
                               "ownerReferences": [{"uid": "1"}]}}
    await plugin.validate(write(CLUSTER_ROLES, new, admission.UPDATE, old))
    with pytest.raises(errors.Forbidden):
        await plugin.validate(write(CLUSTER_ROLES, new_role("c", EVERYTHING, PODS),
                                    admission.UPDATE, old))


AGGREGATE = {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}


async def test_aggregation_rule_needs_every_right_after_the_rules_check():
    plugin = plugin_for(PODS, SECRETS)
    aggregated = {**new_role("c", PODS), "aggregationRule": AGGREGATE}
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(CLUSTER_ROLES, aggregated))
    assert caught.value.message == ('clusterroles.rbac.authorization.k8s.io "c" is forbidden: '
                                    "must have cluster-admin privileges to use the "
                                    "aggregationRule")
    # the rules are checked first: what is not held is the refusal
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(CLUSTER_ROLES, {**new_role("c", EVERYTHING),
                                                    "aggregationRule": AGGREGATE}))
    assert "attempting to grant RBAC permissions" in caught.value.message
    # an empty aggregationRule aggregates nothing
    await plugin.validate(write(CLUSTER_ROLES, {**new_role("c", PODS),
                                                "aggregationRule": {}}))


async def test_updating_a_role_that_aggregated_needs_every_right_too():
    plugin = plugin_for(PODS)
    old = {**new_role("c", PODS), "aggregationRule": AGGREGATE}
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(CLUSTER_ROLES, new_role("c", PODS), admission.UPDATE, old))
    assert "must have cluster-admin privileges" in caught.value.message


async def test_holding_every_right_allows_an_aggregation_rule():
    # rights held as a plain rule set, without `escalate` being asked for on this role
    plugin = plugin_for(r(["*"], ["*"], ["*"]), r(["*"], urls=["*"]))
    await plugin.validate(write(CLUSTER_ROLES, {**new_role("c", PODS),
                                                "aggregationRule": AGGREGATE}))


def role_binding(name: str, kind: str, ref: str, namespace: str | None = None) -> dict:
    return binding(name, kind, ref, "User:someone", namespace=namespace)


async def test_binding_a_role_whose_rules_the_writer_holds():
    plugin = plugin_for(PODS, clusterroles=[role("pods", PODS), role("secrets", SECRETS)])
    await plugin.validate(write(CLUSTER_ROLE_BINDINGS,
                                role_binding("b", "ClusterRole", "pods")))
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(ROLE_BINDINGS,
                                    role_binding("b", "ClusterRole", "secrets", "ns"),
                                    namespace="ns"))
    assert caught.value.message.startswith(
        'rolebindings.rbac.authorization.k8s.io "b" is forbidden: user "u" (groups=')


async def test_bind_on_the_role_skips_the_check():
    plugin = plugin_for(r(["bind"], ["rbac.authorization.k8s.io"], ["clusterroles"],
                          ["admin"]), clusterroles=[role("admin", EVERYTHING)])
    await plugin.validate(write(CLUSTER_ROLE_BINDINGS,
                                role_binding("b", "ClusterRole", "admin")))
    with pytest.raises(errors.Forbidden):
        await plugin.validate(write(CLUSTER_ROLE_BINDINGS,
                                    role_binding("b", "ClusterRole", "held-not")))


async def test_binding_a_missing_role_is_refused_with_the_not_found_text():
    plugin = plugin_for(PODS)
    with pytest.raises(errors.Forbidden) as caught:
        await plugin.validate(write(ROLE_BINDINGS, role_binding("b", "Role", "nope", "ns"),
                                    namespace="ns"))
    assert caught.value.message == ('rolebindings.rbac.authorization.k8s.io "b" is forbidden: '
                                    'role.rbac.authorization.k8s.io "nope" not found')


async def test_other_resources_and_subresources_are_not_checked():
    plugin = plugin_for()
    pods = builtin("v1", "pods")
    await plugin.validate(admission.Attributes(admission.CREATE, pods, None, "ns", "p",
                                               {"metadata": {"name": "p"}}, None, User("u")))
    await plugin.validate(admission.Attributes(admission.DELETE, CLUSTER_ROLES, None, None,
                                               "c", None, new_role("c", EVERYTHING),
                                               User("u")))
