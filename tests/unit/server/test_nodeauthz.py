"""The Node authorizer against upstream's (plugin/pkg/auth/authorizer/node): what a pod
refers to (podutil's VisitPodSecretNames / ConfigmapNames), which reads a node may make
through its pods, token, lease and CSINode rules with upstream's reasons, and the
`system:node` rules for everything else.

The graph's informers never run: pods and claims arrive in their caches as a watch would
bring them (`_apply`)."""

from __future__ import annotations

import pytest

from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import ALLOW, NO_OPINION, Attributes
from k8py.server.apiserver.nodeauthz import NodeAuthorizer, NodeGraph, node_name, references

NODE = User("system:node:n1", ("system:nodes",))


def pod(name: str, node: str | None, namespace: str = "ns", **spec) -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": {**({"nodeName": node} if node else {}), **spec}}


def graph_of(*pods: dict, claims: tuple[dict, ...] = ()) -> NodeGraph:
    graph = NodeGraph(None)  # type: ignore[arg-type]  # no client: caches fed directly
    for obj in pods:
        graph.pods._apply("ADDED", obj)
    for claim in claims:
        graph.claims._apply("ADDED", claim)
    return graph


def ask(verb: str, resource: str, name: str = "", namespace: str = "ns", group: str = "",
        subresource: str = "", user: User = NODE) -> Attributes:
    return Attributes(user, verb, True, group, "v1", resource, subresource, namespace, name)


# --- references -----------------------------------------------------------------------------

def test_references_of_a_pod():
    refs = references(pod("p", "n1", serviceAccountName="builder", imagePullSecrets=[
        {"name": "pull"}, {}], volumes=[
        {"name": "a", "secret": {"secretName": "vol-secret"}},
        {"name": "b", "configMap": {"name": "vol-cm"}},
        {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "d", "projected": {"sources": [{"secret": {"name": "proj-secret"}},
                                                {"configMap": {"name": "proj-cm"}},
                                                {"serviceAccountToken": {"path": "t"}}]}},
        {"name": "e", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
        {"name": "f", "azureFile": {"secretName": "azure-secret", "shareName": "s"}},
        {"name": "g", "cephfs": {"monitors": ["m"], "secretRef": {"name": "ceph-secret"}}},
    ], initContainers=[{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
        containers=[{"name": "c", "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
            {"name": "C", "value": "plain"}],
            "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}],
        ephemeralContainers=[{"name": "e", "envFrom": [{"secretRef": {"name": "debug"}}]}]))
    assert refs == {
        ("serviceaccount", "builder"), ("secret", "pull"), ("secret", "vol-secret"),
        ("configmap", "vol-cm"), ("pvc", "data"), ("secret", "proj-secret"),
        ("configmap", "proj-cm"), ("secret", "csi-secret"), ("secret", "azure-secret"),
        ("secret", "ceph-secret"), ("secret", "init-env"), ("secret", "env-secret"),
        ("configmap", "env-cm"), ("configmap", "envfrom-cm"), ("secret", "debug")}


def test_a_pod_without_a_service_account_runs_as_default():
    assert references(pod("p", "n1")) == {("serviceaccount", "default")}
    assert ("serviceaccount", "old") in references(pod("p", "n1", serviceAccount="old"))


# --- who is a node --------------------------------------------------------------------------

def test_node_identity():
    assert node_name("system:node:n1", ("system:nodes",)) == "n1"
    assert node_name("system:node:n1", ()) is None  # the group is needed too
    assert node_name("alice", ("system:nodes",)) is None
    assert node_name("system:node:", ("system:nodes",)) == ""


def test_not_a_node_has_no_opinion_and_an_unnamed_node_says_so():
    authorizer = NodeAuthorizer(graph_of())
    assert authorizer.authorize(ask("get", "secrets", "s", user=User("alice"))) == \
        (NO_OPINION, "")
    assert authorizer.authorize(ask("get", "secrets", "s", user=User(
        "system:node:", ("system:nodes",)))) == \
        (NO_OPINION, 'unknown node for user "system:node:"')


# --- secrets and configmaps -----------------------------------------------------------------

@pytest.fixture
def authorizer() -> NodeAuthorizer:
    mine = pod("mine", "n1", serviceAccountName="sa1", volumes=[
        {"name": "a", "secret": {"secretName": "s1"}},
        {"name": "b", "configMap": {"name": "cm1"}},
        {"name": "c", "persistentVolumeClaim": {"claimName": "pvc1"}}])
    theirs = pod("theirs", "n2", volumes=[{"name": "a", "secret": {"secretName": "s2"}},
                                          {"name": "c", "persistentVolumeClaim":
                                           {"claimName": "pvc2"}}])
    unscheduled = pod("later", None, volumes=[{"name": "a", "secret": {"secretName": "s3"}}])
    claims = ({"metadata": {"name": "pvc1", "namespace": "ns", "resourceVersion": "1"},
               "spec": {"volumeName": "pv1"}},
              {"metadata": {"name": "pvc2", "namespace": "ns", "resourceVersion": "1"},
               "spec": {"volumeName": "pv2"}})
    return NodeAuthorizer(graph_of(mine, theirs, unscheduled, claims=claims))


NO_RELATIONSHIP = (NO_OPINION, "no relationship found between node 'n1' and this object")


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_a_node_reads_the_secrets_and_configmaps_of_its_pods(authorizer, verb):
    assert authorizer.authorize(ask(verb, "secrets", "s1")) == (ALLOW, "")
    assert authorizer.authorize(ask(verb, "configmaps", "cm1")) == (ALLOW, "")


def test_a_node_does_not_read_what_other_pods_use(authorizer):
    assert authorizer.authorize(ask("get", "secrets", "s2")) == NO_RELATIONSHIP
    assert authorizer.authorize(ask("get", "secrets", "s3")) == NO_RELATIONSHIP
    assert authorizer.authorize(ask("get", "secrets", "s1", namespace="other")) == \
        NO_RELATIONSHIP
    # a configmap named as a secret is not the secret
    assert authorizer.authorize(ask("get", "configmaps", "s1")) == NO_RELATIONSHIP


@pytest.mark.parametrize("attributes,reason", [
    (ask("list", "secrets"), "No Object name found"),
    (ask("update", "secrets", "s1"), "can only read resources of this type"),
    (ask("create", "configmaps", "cm1"), "can only read resources of this type"),
    (ask("get", "secrets", "s1", subresource="x"), "cannot read subresource"),
    (ask("get", "secrets", "s1", namespace=""), "can only read namespaced object of this type"),
])
def test_secret_reads_refused_with_upstreams_reasons(authorizer, attributes, reason):
    assert authorizer.authorize(attributes) == (NO_OPINION, reason)


# --- claims and volumes ---------------------------------------------------------------------

def test_a_node_gets_its_pods_claims_and_their_volumes(authorizer):
    assert authorizer.authorize(ask("get", "persistentvolumeclaims", "pvc1")) == (ALLOW, "")
    assert authorizer.authorize(ask("get", "persistentvolumes", "pv1", namespace="")) == \
        (ALLOW, "")
    assert authorizer.authorize(ask("get", "persistentvolumeclaims", "pvc2")) == \
        NO_RELATIONSHIP
    assert authorizer.authorize(ask("get", "persistentvolumes", "pv2", namespace="")) == \
        NO_RELATIONSHIP


@pytest.mark.parametrize("attributes,reason", [
    (ask("list", "persistentvolumeclaims"), "can only get individual resources of this type"),
    (ask("watch", "persistentvolumes", "pv1", namespace=""),
     "can only get individual resources of this type"),
    (ask("get", "persistentvolumes", "pv1", namespace="", subresource="status"),
     "cannot get subresource"),
])
def test_claim_reads_refused_with_upstreams_reasons(authorizer, attributes, reason):
    assert authorizer.authorize(attributes) == (NO_OPINION, reason)


# --- service account tokens -----------------------------------------------------------------

def test_a_node_creates_tokens_for_its_pods_accounts(authorizer):
    assert authorizer.authorize(ask("create", "serviceaccounts", "sa1", subresource="token")) \
        == (ALLOW, "")
    assert authorizer.authorize(ask("create", "serviceaccounts", "default",
                                    subresource="token")) == NO_RELATIONSHIP


@pytest.mark.parametrize("attributes,reason", [
    (ask("get", "serviceaccounts", "sa1"),
     "can only create tokens for individual service accounts"),
    (ask("create", "serviceaccounts", "", subresource="token"),
     "can only create tokens for individual service accounts"),
    (ask("create", "serviceaccounts", "sa1"),
     "can only create token subresource of serviceaccount"),
])
def test_token_requests_refused_with_upstreams_reasons(authorizer, attributes, reason):
    assert authorizer.authorize(attributes) == (NO_OPINION, reason)


# --- leases and CSINodes --------------------------------------------------------------------

LEASES = "coordination.k8s.io"


@pytest.mark.parametrize("verb", ["get", "update", "patch", "delete"])
def test_a_node_keeps_its_own_lease(authorizer, verb):
    assert authorizer.authorize(ask(verb, "leases", "n1", "kube-node-lease", LEASES)) == \
        (ALLOW, "")
    assert authorizer.authorize(ask(verb, "leases", "n2", "kube-node-lease", LEASES)) == (
        NO_OPINION, "can only access node lease with the same name as the requesting node")


def test_lease_create_is_left_to_node_restriction(authorizer):
    assert authorizer.authorize(ask("create", "leases", "", "kube-node-lease", LEASES)) == \
        (ALLOW, "")


@pytest.mark.parametrize("attributes,reason", [
    (ask("list", "leases", "", "kube-node-lease", LEASES),
     "can only get, create, update, patch, or delete a node lease"),
    (ask("get", "leases", "n1", "default", LEASES),
     'can only access leases in the "kube-node-lease" system namespace'),
])
def test_lease_requests_refused_with_upstreams_reasons(authorizer, attributes, reason):
    assert authorizer.authorize(attributes) == (NO_OPINION, reason)


def test_csinodes_are_the_nodes_own(authorizer):
    storage = "storage.k8s.io"
    assert authorizer.authorize(ask("get", "csinodes", "n1", "", storage)) == (ALLOW, "")
    assert authorizer.authorize(ask("create", "csinodes", "", "", storage)) == (ALLOW, "")
    assert authorizer.authorize(ask("update", "csinodes", "n2", "", storage)) == (
        NO_OPINION, "can only access CSINode with the same name as the requesting node")
    assert authorizer.authorize(ask("list", "csinodes", "", "", storage)) == (
        NO_OPINION, "can only get, create, update, patch, or delete a CSINode")
    assert authorizer.authorize(ask("get", "csinodes", "n1", "", storage, "status")) == (
        NO_OPINION, "cannot authorize CSINode subresources")


# --- everything else: the system:node rules -------------------------------------------------

@pytest.mark.parametrize("attributes", [
    ask("create", "nodes", namespace=""),
    ask("patch", "nodes", "n1", namespace="", subresource="status"),
    ask("list", "services"),
    ask("create", "pods", namespace="ns"),
    ask("update", "pods", "p", subresource="status"),
    ask("create", "pods", "p", subresource="eviction"),
    ask("create", "events"),
    ask("create", "certificatesigningrequests", namespace="", group="certificates.k8s.io"),
    ask("create", "subjectaccessreviews", namespace="", group="authorization.k8s.io"),
    ask("get", "endpoints", "e"),
])
def test_the_system_node_rules_allow_a_kubelets_other_calls(authorizer, attributes):
    assert authorizer.authorize(attributes) == (ALLOW, "")


@pytest.mark.parametrize("attributes", [
    ask("delete", "nodes", "n1", namespace=""),
    ask("create", "deployments", group="apps"),
    ask("update", "pods", "p"),
    ask("create", "clusterrolebindings", namespace="", group="rbac.authorization.k8s.io"),
    Attributes(NODE, "get", False, path="/metrics"),
])
def test_the_system_node_rules_allow_nothing_more(authorizer, attributes):
    assert authorizer.authorize(attributes) == (NO_OPINION, "")


def test_the_graph_follows_pods_as_they_come_and_go():
    graph = graph_of()
    authorizer = NodeAuthorizer(graph)
    mine = pod("p", "n1", volumes=[{"name": "a", "secret": {"secretName": "s"}}])
    assert authorizer.authorize(ask("get", "secrets", "s")) == NO_RELATIONSHIP
    graph.pods._apply("ADDED", mine)
    assert authorizer.authorize(ask("get", "secrets", "s")) == (ALLOW, "")
    moved = pod("p", "n2", volumes=[{"name": "a", "secret": {"secretName": "s"}}])
    moved["metadata"]["resourceVersion"] = "2"
    graph.pods._apply("MODIFIED", moved)
    assert authorizer.authorize(ask("get", "secrets", "s")) == NO_RELATIONSHIP
    graph.pods._apply("ADDED", mine)
    graph.pods._apply("DELETED", mine)
    assert authorizer.authorize(ask("get", "secrets", "s")) == NO_RELATIONSHIP
