"""NodeRestriction against upstream's plugin (plugin/pkg/admission/noderestriction): the
labels a kubelet may set, and what a node may write about nodes, pods, leases, CSINodes and
service account tokens, with upstream's messages. Stored pods and nodes come from plain
lookups, as the server's store answers them."""

from __future__ import annotations

from typing import Any

import pytest

from k8py.api import errors
from k8py.api.resources import Resource, builtin
from k8py.server.apiserver import admission
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.noderestriction import NodeRestriction, forbidden_labels

NODE = User("system:node:n1", ("system:nodes",))
NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")
LEASES = builtin("coordination.k8s.io/v1", "leases")
# not served by k8py yet; the plugin holds upstream's rule for when it is
CSINODES = Resource("storage.k8s.io", "v1", "CSINode", "csinodes", False)
ACCOUNTS = builtin("v1", "serviceaccounts")


def stored_pod(name: str, node: str, uid: str = "uid-" + "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"nodeName": node}}


PODS_STORED = {("ns", "mine"): stored_pod("mine", "n1", "uid-mine"),
               ("ns", "theirs"): stored_pod("theirs", "n2", "uid-theirs")}
NODES_STORED = {"n1": {"metadata": {"name": "n1", "uid": "node-uid"}}}


async def pods_on(namespace: str, name: str):
    return PODS_STORED.get((namespace, name))


async def nodes_on(name: str):
    return NODES_STORED.get(name)


PLUGIN = NodeRestriction(pods_on, nodes_on)


async def check(operation: str, resource, obj: Any = None, old: Any = None, *,
                name: str | None = None, namespace: str | None = None,
                subresource: str | None = None, user: User = NODE) -> None:
    if name is None and isinstance(obj, dict):
        name = obj.get("metadata", {}).get("name")
    await PLUGIN.validate(admission.Attributes(operation, resource, subresource, namespace,
                                               name, obj, old, user))


async def refused(message: str, *args, **kwargs) -> None:
    with pytest.raises(errors.Forbidden) as caught:
        await check(*args, **kwargs)
    assert caught.value.message == message


# --- labels ---------------------------------------------------------------------------------

def test_forbidden_labels():
    assert forbidden_labels({
        "foo": "", "example.com/foo": "",
        "kubernetes.io/hostname": "", "topology.kubernetes.io/zone": "",
        "beta.kubernetes.io/instance-type": "", "node.kubernetes.io/instance-type": "",
        "kubelet.kubernetes.io/anything": "", "sub.kubelet.kubernetes.io/x": "",
        "node.kubernetes.io/exclude-from-external-load-balancers": "",
        "node-role.kubernetes.io/master": "", "other.k8s.io/x": "", "k8s.io/x": "",
        "node-restriction.kubernetes.io/secure": "", "x.node-restriction.kubernetes.io/y": "",
        "kubernetes.io/made-up": "",
    }.keys()) == ["k8s.io/x", "kubernetes.io/made-up", "node-restriction.kubernetes.io/secure",
                  "node-role.kubernetes.io/master", "other.k8s.io/x",
                  "x.node-restriction.kubernetes.io/y"]


# --- nodes ----------------------------------------------------------------------------------

def node(name: str = "n1", labels: dict | None = None, **spec) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


async def test_a_node_writes_only_its_own_node():
    await check(admission.CREATE, NODES, node())
    await refused('nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"',
                  admission.UPDATE, NODES, node("n2"), node("n2"))
    await refused('nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"',
                  admission.DELETE, NODES, None, node("n2"), name="n2")


async def test_a_node_registers_with_kubelet_labels_only():
    await check(admission.CREATE, NODES, node(labels={"kubernetes.io/hostname": "n1",
                                                      "example.com/x": "y"}))
    await refused('nodes "n1" is forbidden: node "n1" is not allowed to set the following '
                  "labels: node-restriction.kubernetes.io/a, node-role.kubernetes.io/master",
                  admission.CREATE, NODES, node(labels={
                      "node-role.kubernetes.io/master": "", "kubernetes.io/os": "linux",
                      "node-restriction.kubernetes.io/a": "b"}))


async def test_a_node_changes_only_kubelet_labels():
    old = node(labels={"node-role.kubernetes.io/master": "", "kubernetes.io/os": "linux"})
    await check(admission.UPDATE, NODES, node(labels={
        "node-role.kubernetes.io/master": "", "kubernetes.io/os": "windows", "a": "b"}), old)
    await refused('nodes "n1" is forbidden: is not allowed to modify labels: '
                  "node-role.kubernetes.io/master",
                  admission.UPDATE, NODES, node(labels={"kubernetes.io/os": "linux"}), old)


async def test_a_node_does_not_change_its_taints():
    old = node(taints=[{"key": "k", "effect": "NoSchedule"}])
    await check(admission.UPDATE, NODES, node(taints=[{"key": "k", "effect": "NoSchedule"}]),
                old)
    await check(admission.UPDATE, NODES, node(taints=[]), node())  # none is none
    await refused('nodes "n1" is forbidden: node "n1" is not allowed to modify taints',
                  admission.UPDATE, NODES, node(), old)


async def test_config_source():
    source = {"configMap": {"name": "c"}}
    await refused('nodes "n1" is forbidden: node "n1" is not allowed to create pods with a '
                  "non-nil configSource", admission.CREATE, NODES, node(configSource=source))
    await check(admission.UPDATE, NODES, node(configSource=source), node(configSource=source))
    await check(admission.UPDATE, NODES, node(), node(configSource=source))  # dropping it
    await refused('nodes "n1" is forbidden: node "n1" is not allowed to update configSource '
                  "to a new non-nil configSource",
                  admission.UPDATE, NODES, node(configSource=source), node())


async def test_other_users_are_not_restricted():
    for user in (User("alice"), User("system:node:n1"), User("bob", ("system:nodes",))):
        await check(admission.UPDATE, NODES, node("n2", taints=[1]), node("n2"), user=user)


async def test_a_node_user_without_a_name_is_refused():
    await refused('nodes "n1" is forbidden: could not determine node from user "system:node:"',
                  admission.CREATE, NODES, node(),
                  user=User("system:node:", ("system:nodes",)))


# --- mirror pods ----------------------------------------------------------------------------

OWNER = {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid",
         "controller": True}


def mirror(owners: list | None = None, annotations: dict | None = None, node_name="n1",
           **spec) -> dict:
    annotations = {"kubernetes.io/config.mirror": "x"} if annotations is None else annotations
    return {"metadata": {"name": "static-n1", "namespace": "ns", "annotations": annotations,
                         "ownerReferences": [OWNER] if owners is None else owners},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "i"}],
                     **spec}}


async def create_pod(obj: dict) -> None:
    await check(admission.CREATE, PODS, obj, namespace="ns")


async def pod_refused(message: str, obj: dict) -> None:
    with pytest.raises(errors.Forbidden) as caught:
        await create_pod(obj)
    assert caught.value.message == 'pods "static-n1" is forbidden: ' + message


async def test_a_node_creates_its_mirror_pods():
    await create_pod(mirror())


@pytest.mark.parametrize("obj,message", [
    (mirror(annotations={}), 'pod does not have "kubernetes.io/config.mirror" annotation, '
                             'node "n1" can only create mirror pods'),
    (mirror(node_name="n2"), 'node "n1" can only create pods with spec.nodeName set to itself'),
    (mirror(owners=[OWNER, OWNER]),
     'node "n1" can only create pods with a single owner reference set to itself'),
    (mirror(owners=[]), 'node "n1" can only create pods with an owner reference set to itself'),
    (mirror(owners=[{**OWNER, "name": "n2"}]),
     'node "n1" can only create pods with an owner reference set to itself'),
    (mirror(owners=[{**OWNER, "kind": "Pod"}]),
     'node "n1" can only create pods with an owner reference set to itself'),
    (mirror(owners=[{**OWNER, "controller": False}]),
     'node "n1" can only create pods with a controller owner reference set to itself'),
    (mirror(owners=[{**OWNER, "blockOwnerDeletion": True}]),
     'node "n1" must not set blockOwnerDeletion on an owner reference'),
    (mirror(owners=[{**OWNER, "uid": "stale"}]),
     "node n1 UID mismatch: expected stale got node-uid"),
    (mirror(serviceAccountName="default"),
     'node "n1" can not create pods that reference a service account'),
    (mirror(imagePullSecrets=[{"name": "s"}]),
     'node "n1" can not create pods that reference secrets'),
    (mirror(volumes=[{"name": "v", "configMap": {"name": "c"}}]),
     'node "n1" can not create pods that reference configmaps'),
    (mirror(volumes=[{"name": "v", "projected": {"sources": [
        {"clusterTrustBundle": {"name": "b", "path": "p"}}]}}]),
     'node "n1" can not create pods that reference clustertrustbundles'),
    (mirror(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]),
     'node "n1" can not create pods that reference persistentvolumeclaims'),
    # checked in upstream's order: secrets before configmaps before claims
    (mirror(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "c"}},
                     {"name": "w", "configMap": {"name": "c"}},
                     {"name": "x", "secret": {"secretName": "s"}}]),
     'node "n1" can not create pods that reference secrets'),
])
async def test_mirror_pods_refused_with_upstreams_messages(obj, message):
    await pod_refused(message, obj)


async def test_a_mirror_pod_of_an_unregistered_node_is_not_found():
    plugin = NodeRestriction(pods_on, nodes_on)
    user = User("system:node:ghost", ("system:nodes",))
    obj = mirror(owners=[{**OWNER, "name": "ghost"}], node_name="ghost")
    with pytest.raises(errors.NotFound) as caught:
        await plugin.validate(admission.Attributes(admission.CREATE, PODS, None, "ns",
                                                   "static-n1", obj, None, user))
    assert caught.value.message == 'nodes "ghost" not found'


# --- other pod writes -----------------------------------------------------------------------

async def test_a_node_deletes_only_its_pods():
    await check(admission.DELETE, PODS, None, stored_pod("mine", "n1"), name="mine",
                namespace="ns")
    await refused('pods "theirs" is forbidden: node "n1" can only delete pods with '
                  "spec.nodeName set to itself", admission.DELETE, PODS, None,
                  stored_pod("theirs", "n2"), name="theirs", namespace="ns")


async def test_a_node_does_not_update_pods():
    await refused('pods "mine" is forbidden: unexpected operation "UPDATE", node "n1" can only '
                  "create and delete mirror pods", admission.UPDATE, PODS,
                  stored_pod("mine", "n1"), stored_pod("mine", "n1"), namespace="ns")


async def test_pod_status_of_its_own_pods_labels_unchanged():
    old = stored_pod("mine", "n1")
    await check(admission.UPDATE, PODS, {**old, "status": {"phase": "Running"}}, old,
                namespace="ns", subresource="status")
    theirs = stored_pod("theirs", "n2")
    await refused('pods "theirs" is forbidden: node "n1" can only update pod status for pods '
                  "with spec.nodeName set to itself", admission.UPDATE, PODS, theirs, theirs,
                  namespace="ns", subresource="status")
    relabelled = {**old, "metadata": {**old["metadata"], "labels": {"a": "b"}}}
    await refused('pods "mine" is forbidden: node "n1" cannot update labels through pod '
                  "status", admission.UPDATE, PODS, relabelled, old, namespace="ns",
                  subresource="status")
    claimed = {**old, "status": {"resourceClaimStatuses": [{"name": "c",
                                                            "resourceClaimName": "x"}]}}
    await refused('pods "mine" is forbidden: node "n1" cannot update resource claim statues',
                  admission.UPDATE, PODS, claimed, old, namespace="ns", subresource="status")


async def test_a_node_evicts_only_its_pods_as_stored():
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "mine", "namespace": "ns"}}
    await check(admission.CREATE, PODS, eviction, name="mine", namespace="ns",
                subresource="eviction")
    # the pod comes from the store: an eviction of another node's pod is refused
    await refused('pods "theirs" is forbidden: node n1 can only evict pods with spec.nodeName '
                  "set to itself", admission.CREATE, PODS,
                  {**eviction, "metadata": {"name": "theirs"}}, name="theirs", namespace="ns",
                  subresource="eviction")
    with pytest.raises(errors.NotFound) as caught:
        await check(admission.CREATE, PODS, eviction, name="gone", namespace="ns",
                    subresource="eviction")
    assert caught.value.message == 'pods "gone" not found'
    # the Eviction's name when the URL has none
    await check(admission.CREATE, PODS, eviction, name="", namespace="ns",
                subresource="eviction")
    await refused('pods is forbidden: could not determine pod from request data',
                  admission.CREATE, PODS, ["not", "an", "eviction"], name="", namespace="ns",
                  subresource="eviction")


async def test_other_pod_subresources_are_refused():
    await refused("pods \"mine\" is forbidden: unexpected pod subresource \"binding\", only "
                  "'status' and 'eviction' are allowed", admission.CREATE, PODS,
                  {"metadata": {"name": "mine"}}, namespace="ns", subresource="binding")


# --- leases and CSINodes --------------------------------------------------------------------

def named(name: str, namespace: str | None = None) -> dict:
    return {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}


async def test_a_node_writes_only_its_own_lease_in_the_lease_namespace():
    await check(admission.CREATE, LEASES, named("n1", "kube-node-lease"),
                namespace="kube-node-lease")
    await refused('leases.coordination.k8s.io "n2" is forbidden: can only access node lease '
                  "with the same name as the requesting node", admission.CREATE, LEASES,
                  named("n2", "kube-node-lease"), namespace="kube-node-lease")
    await refused('leases.coordination.k8s.io "n2" is forbidden: can only access node lease '
                  "with the same name as the requesting node", admission.UPDATE, LEASES,
                  named("n2", "kube-node-lease"), named("n2", "kube-node-lease"),
                  namespace="kube-node-lease")
    await refused('leases.coordination.k8s.io "n1" is forbidden: can only access leases in '
                  'the "kube-node-lease" system namespace', admission.CREATE, LEASES,
                  named("n1", "default"), namespace="default")


async def test_a_node_writes_only_its_own_csinode():
    await check(admission.CREATE, CSINODES, named("n1"))
    await refused('csinodes.storage.k8s.io "n2" is forbidden: can only access CSINode with '
                  "the same name as the requesting node", admission.CREATE, CSINODES,
                  named("n2"))
    await refused('csinodes.storage.k8s.io "n2" is forbidden: can only access CSINode with '
                  "the same name as the requesting node", admission.DELETE, CSINODES, None,
                  named("n2"), name="n2")


# --- service account tokens -----------------------------------------------------------------

def token_request(**ref) -> dict:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["x"], **({"boundObjectRef": ref} if ref else {})}}


async def token(body: Any) -> None:
    await check(admission.CREATE, ACCOUNTS, body, name="sa", namespace="ns",
                subresource="token")


async def token_refused(message: str, body: Any) -> None:
    with pytest.raises(errors.Forbidden) as caught:
        await token(body)
    assert caught.value.message == 'serviceaccounts "sa" is forbidden: ' + message


async def test_a_node_requests_tokens_bound_to_its_pods():
    await token(token_request(apiVersion="v1", kind="Pod", name="mine", uid="uid-mine"))


@pytest.mark.parametrize("body,message", [
    (token_request(), "node requested token not bound to a pod"),
    (token_request(apiVersion="v1", kind="Secret", name="s", uid="u"),
     "node requested token not bound to a pod"),
    (token_request(kind="Pod", name="mine", uid="uid-mine"),
     "node requested token not bound to a pod"),  # apiVersion v1 is required
    (token_request(apiVersion="v1", kind="Pod", uid="uid-mine"),
     "node requested token not bound to a pod"),
    (token_request(apiVersion="v1", kind="Pod", name="mine"),
     "node requested token with a pod binding without a uid"),
    (token_request(apiVersion="v1", kind="Pod", name="mine", uid="old"),
     "the UID in the bound object reference (old) does not match the UID in record. The "
     "object might have been deleted and then recreated"),
    (token_request(apiVersion="v1", kind="Pod", name="theirs", uid="uid-theirs"),
     "node requested token bound to a pod scheduled on a different node"),
    ({"spec": "junk"}, "node requested token not bound to a pod"),
])
async def test_token_requests_refused_with_upstreams_messages(body, message):
    await token_refused(message, body)


async def test_a_token_bound_to_a_missing_pod_is_not_found():
    with pytest.raises(errors.NotFound) as caught:
        await token(token_request(apiVersion="v1", kind="Pod", name="gone", uid="u"))
    assert caught.value.message == 'pods "gone" not found'


async def test_other_service_account_writes_are_not_restricted_here():
    await check(admission.CREATE, ACCOUNTS, named("sa", "ns"), namespace="ns")
