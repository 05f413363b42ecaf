"""The namespace lifecycle against a real API server, driven by kubectl: deleting a namespace
deletes its contents, then the namespace; finalizers on contents hold it, with upstream's
conditions saying why."""

from __future__ import annotations

import json

from k8py.api import errors
from k8py.api.resources import builtin, from_crd
from tests.conftest import eventually

NAMESPACES = builtin("v1", "namespaces")
PODS = builtin("v1", "pods")
CONFIGMAPS = builtin("v1", "configmaps")


def contents(namespace: str) -> str:
    replicaset = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "containers": [{"name": "c", "image": "busybox"}]}}},
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "settings", "namespace": namespace},
                 "data": {"a": "1"}}
    return "\n".join(json.dumps(obj) for obj in (replicaset, configmap))


async def running_pods(client, namespace: str, count: int) -> None:
    async def check():
        pods = (await client.list(PODS, namespace))["items"]
        return sum((p.get("status") or {}).get("phase") == "Running" for p in pods) == count
    await eventually(check, 10, what=f"{count} running pods in {namespace}")


async def namespace_gone(client, name: str) -> bool:
    try:
        await client.get(NAMESPACES, name)
    except errors.NotFound:
        return True
    return False


async def test_deleting_a_namespace_deletes_its_contents_then_itself(cluster):
    await cluster.akubectl("create", "namespace", "doomed")
    await cluster.akubectl("apply", "-f", "-", input=contents("doomed"))
    await running_pods(cluster.client, "doomed", 2)

    await cluster.akubectl("delete", "namespace", "doomed", "--wait=false")
    await eventually(lambda: namespace_gone(cluster.client, "doomed"), 15,
                     what="namespace deleted")
    proc = await cluster.akubectl("get", "ns", "doomed", check=False)
    assert proc.returncode != 0 and "NotFound" in proc.stderr
    for resource in (PODS, CONFIGMAPS, builtin("apps/v1", "replicasets")):
        assert (await cluster.client.list(resource, "doomed"))["items"] == []
    assert not await namespace_gone(cluster.client, "default")


async def _exists(client, resource, namespace: str, name: str) -> bool:
    try:
        await client.get(resource, name, namespace)
    except errors.NotFound:
        return False
    return True


def _conditions(namespace: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (namespace.get("status") or {}).get("conditions") or ()}


async def test_content_with_finalizers_holds_the_namespace(cluster):
    client = cluster.client
    await cluster.akubectl("create", "namespace", "held")
    # its default ServiceAccount first: created later, it would be content left over
    await eventually(lambda: _exists(client, builtin("v1", "serviceaccounts"), "held",
                                     "default"), 10, what="default ServiceAccount")
    await client.create(CONFIGMAPS, {"metadata": {"name": "pinned",
                                                  "finalizers": ["example.com/hold"]}}, "held")
    await client.create(CONFIGMAPS, {"metadata": {"name": "free"}}, "held")
    await cluster.akubectl("delete", "namespace", "held", "--wait=false")

    content = "Some resources are remaining: configmaps. has 1 resource instances"

    async def reported():
        # a pass may still count what it is deleting (the ServiceAccount): wait for the
        # report that only the held ConfigMap remains
        namespace = await client.get(NAMESPACES, "held")
        conditions = _conditions(namespace)
        remaining = conditions.get("NamespaceFinalizersRemaining")
        left = (conditions.get("NamespaceContentRemaining") or {}).get("message")
        return namespace if remaining and remaining["status"] == "True" and \
            left == content else None
    namespace = await eventually(reported, 10, what="finalizers reported")
    assert namespace["status"]["phase"] == "Terminating"
    conditions = _conditions(namespace)
    assert conditions["NamespaceFinalizersRemaining"]["reason"] == "SomeFinalizerRemain"
    assert conditions["NamespaceFinalizersRemaining"]["message"] == \
        "Some finalizers are remaining: example.com/hold in 1 resource instances"
    assert conditions["NamespaceContentRemaining"]["message"] == content
    assert conditions["NamespaceDeletionDiscoveryFailure"] == {
        **conditions["NamespaceDeletionDiscoveryFailure"], "status": "False",
        "reason": "ResourcesDiscovered", "message": "All resources successfully discovered"}
    assert await _configmap_names(client, "held") == ["pinned"]
    assert namespace["spec"]["finalizers"] == ["kubernetes"]

    await cluster.akubectl("patch", "configmap", "pinned", "-n", "held", "--type=merge",
                           "-p", '{"metadata":{"finalizers":null}}')
    # The controller looks again after upstream's estimate for finalizers (15 s / 2 + 1).
    await eventually(lambda: namespace_gone(client, "held"), 15, what="namespace deleted")


async def _configmap_names(client, namespace: str) -> list[str]:
    return [c["metadata"]["name"] for c in (await client.list(CONFIGMAPS, namespace))["items"]]


async def test_new_content_is_refused_while_terminating(cluster):
    client = cluster.client
    await cluster.akubectl("create", "namespace", "closing")
    await client.create(CONFIGMAPS, {"metadata": {"name": "pinned",
                                                  "finalizers": ["example.com/hold"]}},
                        "closing")
    await cluster.akubectl("delete", "namespace", "closing", "--wait=false")
    proc = await cluster.akubectl("create", "configmap", "late", "-n", "closing", check=False)
    assert proc.returncode != 0 and "being terminated" in proc.stderr
    await client.patch(CONFIGMAPS, "pinned", {"metadata": {"finalizers": None}}, "closing")


GADGETS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object",
                               "x-kubernetes-preserve-unknown-fields": True}}}]},
}


async def test_custom_resources_are_deleted_with_their_namespace(cluster):
    client = cluster.client
    crd = await client.create(builtin("apiextensions.k8s.io/v1", "customresourcedefinitions"),
                              GADGETS_CRD)
    gadgets = from_crd(crd)[0]
    await cluster.akubectl("create", "namespace", "tools")
    await client.create(gadgets, {"apiVersion": "example.com/v1", "kind": "Gadget",
                                  "metadata": {"name": "g1"}}, "tools")
    await cluster.akubectl("delete", "namespace", "tools", "--wait=false")
    await eventually(lambda: namespace_gone(client, "tools"), 10, what="namespace deleted")
    assert (await client.list(gadgets, "tools"))["items"] == []
