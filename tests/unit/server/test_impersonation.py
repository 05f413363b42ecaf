"""Impersonation headers against upstream's filter (staging/src/k8s.io/apiserver/pkg/
endpoints/filters/impersonation_test.go): who the request becomes, which checks are made
with which attributes and in which order, and the refusals with upstream's messages.

The checks go to a real RBAC authorizer over a Policy fed as its watch would feed it."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from k8py.api import errors
from k8py.server.apiserver import authz
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import Attributes
from k8py.server.apiserver.impersonation import impersonate, requested
from k8py.server.apiserver.rbac import RBACAuthorizer

from tests.unit.server.test_rbac import binding, policy_of, role

AUTHN = "authentication.k8s.io"


def may(resource: str, group: str = "", names: list[str] | None = None) -> dict:
    rule = {"verbs": ["impersonate"], "apiGroups": [group], "resources": [resource]}
    if names:
        rule["resourceNames"] = names
    return rule


# who may impersonate what, as upstream's test authorizer has it, in RBAC terms
POLICY = policy_of(
    clusterroles=[role("users", may("users")), role("accounts", may("serviceaccounts")),
                  role("groups", may("groups")),
                  role("scopes", may("userextras/scopes", AUTHN)),
                  role("scope-a", may("userextras/scopes", AUTHN, ["scope-a"])),
                  role("uid", may("uids", AUTHN, ["some-uid"]))],
    clusterrolebindings=[
        binding("users", "ClusterRole", "users", "Group:wheel", "Group:everything"),
        binding("accounts", "ClusterRole", "accounts", "Group:sa-impersonater"),
        binding("groups", "ClusterRole", "groups", "Group:group-impersonater",
                "Group:everything"),
        binding("scopes", "ClusterRole", "scopes", "Group:extra-setter-scopes",
                "Group:everything"),
        binding("scope-a", "ClusterRole", "scope-a", "Group:extra-setter-particular-scopes"),
        binding("uid", "ClusterRole", "uid", "Group:everything"),
    ])
AUTHORIZER = authz.Union([authz.PrivilegedGroup(), RBACAuthorizer(POLICY)])


async def rbac_check(attributes: Attributes) -> None:
    authz.check(AUTHORIZER, attributes)


def headers(user: str = "", groups: tuple[str, ...] = (), uid: str = "",
            extras: dict[str, list[str]] | None = None) -> CIMultiDict:
    out: CIMultiDict = CIMultiDict()
    if user:
        out.add("Impersonate-User", user)
    for group in groups:
        out.add("Impersonate-Group", group)
    for key, values in (extras or {}).items():
        for value in values:
            out.add("Impersonate-Extra-" + key, value)
    if uid:
        out.add("Impersonate-Uid", uid)
    return out


async def act(actor: User, **kwargs) -> User:
    return await impersonate(actor, headers(**kwargs), rbac_check)


DEV_WHEEL = User("dev", ("wheel",))


def test_requested_only_with_impersonation_headers():
    assert not requested(CIMultiDict({"Authorization": "Bearer x"}))
    assert requested(CIMultiDict({"impersonate-user": "x"}))
    assert requested(headers(extras={"scopes": ["a"]}))


async def test_allowed_user():
    user = await act(User("dev", ("wheel",)), user="tester")
    assert (user.name, user.groups, user.uid, user.extra) == \
        ("tester", ("system:authenticated",), "", {})


async def test_refused_user_is_the_403_of_that_check():
    with pytest.raises(errors.Forbidden) as caught:
        await act(User("dev", ("sa-impersonater",)), user="tester")
    assert caught.value.message == ('users "tester" is forbidden: User "dev" cannot '
                                    'impersonate resource "users" in API group "" at the '
                                    "cluster scope")


@pytest.mark.parametrize("kwargs,message", [
    ({"groups": ("some-group",)}, "requested [{Group  some-group    }] without impersonating "
                                  "a user"),
    ({"extras": {"scopes": ["scope-a"]}},
     "requested [{UserExtra  scope-a  authentication.k8s.io/v1  scopes}] without "
     "impersonating a user"),
    ({"uid": "some-uid"}, "requested [{UID  some-uid  authentication.k8s.io/v1  }] without "
                          "impersonating a user"),
    ({"groups": ("a", "b"), "uid": "u"},
     "requested [{Group  a    } {Group  b    } {UID  u  authentication.k8s.io/v1  }] without "
     "impersonating a user"),
])
async def test_groups_extras_or_uid_without_a_user_are_a_bad_request(kwargs, message):
    with pytest.raises(errors.BadRequest) as caught:
        await act(User("system:admin", ("system:masters",)), **kwargs)
    assert caught.value.code == 400 and caught.value.message == message


async def test_groups_need_their_own_right():
    with pytest.raises(errors.Forbidden) as caught:
        await act(DEV_WHEEL, user="system:admin", groups=("some-group",))
    assert caught.value.message == ('groups "some-group" is forbidden: User "dev" cannot '
                                    'impersonate resource "groups" in API group "" at the '
                                    "cluster scope")
    user = await act(User("dev", ("wheel", "group-impersonater")), user="system:admin",
                     groups=("some-group",))
    assert user.groups == ("some-group", "system:authenticated")


async def test_extras_need_their_own_right_per_key_and_value():
    with pytest.raises(errors.Forbidden) as caught:
        await act(DEV_WHEEL, user="system:admin", extras={"scopes": ["scope-a"]})
    assert caught.value.message == (
        'userextras.authentication.k8s.io "scope-a" is forbidden: User "dev" cannot '
        'impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at '
        "the cluster scope")
    particular = User("dev", ("wheel", "extra-setter-particular-scopes"))
    with pytest.raises(errors.Forbidden) as caught:
        await act(particular, user="system:admin", extras={"scopes": ["scope-a", "scope-b"]})
    assert caught.value.message.startswith('userextras.authentication.k8s.io "scope-b" is '
                                           "forbidden")
    user = await act(User("dev", ("wheel", "extra-setter-scopes")), user="system:admin",
                     extras={"scopes": ["scope-a", "scope-b"]})
    assert user.extra == {"scopes": ["scope-a", "scope-b"]}
    assert user.groups == ("system:authenticated",)


async def test_extra_keys_are_lower_cased_then_percent_decoded():
    admin = User("a", ("system:masters",))
    user = await act(admin, user="x", extras={
        "Example.com%2fescaped%e1%9b%84scopes": ["a", "b"],
        "almost%zzpercent%xxencoded": ["c"],
        "Upper%41": ["d"]})
    assert user.extra == {"example.com/escapedᛄscopes": ["a", "b"],
                          "almost%zzpercent%xxencoded": ["c"],  # malformed: kept as sent
                          "upperA": ["d"]}  # an escaped capital stays one


async def test_service_account_gets_its_groups_unless_groups_are_given():
    sa = User("dev", ("sa-impersonater",))
    user = await act(sa, user="system:serviceaccount:foo:default")
    assert (user.name, user.groups) == ("system:serviceaccount:foo:default", (
        "system:serviceaccounts", "system:serviceaccounts:foo", "system:authenticated"))
    admin = User("a", ("system:masters",))
    user = await act(admin, user="system:serviceaccount:foo:default", groups=("g",))
    assert user.groups == ("g", "system:authenticated")


async def test_a_service_account_is_checked_in_its_namespace():
    with pytest.raises(errors.Forbidden) as caught:
        await act(DEV_WHEEL, user="system:serviceaccount:foo:default")
    assert caught.value.message == (
        'serviceaccounts "default" is forbidden: User "dev" cannot impersonate resource '
        '"serviceaccounts" in API group "" in the namespace "foo"')


@pytest.mark.parametrize("name", [
    "system:serviceaccount:Foo:default",  # not a DNS label
    "system:serviceaccount:foo:Default",  # not a DNS subdomain
    "system:serviceaccount:foo:a:b", "system:serviceaccount::default",
    "system:serviceaccount:foo:", "system:serviceaccount:foo",
    "system:serviceaccount:" + "n" * 64 + ":default",
])
async def test_a_malformed_service_account_name_is_a_plain_user(name):
    user = await act(DEV_WHEEL, user=name)  # wheel may impersonate users, not accounts
    assert user.name == name and user.groups == ("system:authenticated",)


@pytest.mark.parametrize("kwargs,groups", [
    ({"user": "system:anonymous"}, ("system:unauthenticated",)),
    ({"user": "system:anonymous", "groups": ("system:unauthenticated",)},
     ("system:unauthenticated",)),
    ({"user": "system:anonymous", "groups": ("g",)}, ("g", "system:unauthenticated")),
    ({"user": "unknown", "groups": ("system:unauthenticated",)}, ("system:unauthenticated",)),
    ({"user": "unknown", "groups": ("system:authenticated",)}, ("system:authenticated",)),
    ({"user": "system:admin", "groups": ("some-group", "system:authenticated")},
     ("some-group", "system:authenticated")),
])
async def test_authenticated_and_unauthenticated_groups(kwargs, groups):
    user = await act(User("system:admin", ("system:masters",)), **kwargs)
    assert user.groups == groups


async def test_uid():
    everything = User("dev", ("everything",))
    user = await act(everything, user="tester", uid="some-uid")
    assert (user.uid, user.groups) == ("some-uid", ("system:authenticated",))
    with pytest.raises(errors.Forbidden) as caught:
        await act(everything, user="tester", uid="disallowed-uid")
    assert caught.value.message == ('uids.authentication.k8s.io "disallowed-uid" is forbidden: '
                                    'User "dev" cannot impersonate resource "uids" in API '
                                    'group "authentication.k8s.io" at the cluster scope')
    user = await act(everything, user="tester", uid="some-uid",
                     groups=("system:authenticated",), extras={"scopes": ["a", "b"]})
    assert (user.name, user.uid, user.groups, user.extra) == (
        "tester", "some-uid", ("system:authenticated",), {"scopes": ["a", "b"]})


async def test_each_check_in_upstreams_order_with_its_attributes():
    asked: list[Attributes] = []

    async def record(attributes: Attributes) -> None:
        asked.append(attributes)

    actor = User("dev")
    await impersonate(actor, headers(user="system:serviceaccount:ns:sa", groups=("g1", "g2"),
                                     uid="u1", extras={"scopes": ["a", "b"]}), record)
    assert [(a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name)
            for a in asked] == [
        ("impersonate", "", "serviceaccounts", "", "ns", "sa"),
        ("impersonate", "", "groups", "", "", "g1"),
        ("impersonate", "", "groups", "", "", "g2"),
        ("impersonate", AUTHN, "userextras", "scopes", "", "a"),
        ("impersonate", AUTHN, "userextras", "scopes", "", "b"),
        ("impersonate", AUTHN, "uids", "", "", "u1")]
    assert all(a.user is actor and a.resource_request and a.api_version == "v1"
               for a in asked)
