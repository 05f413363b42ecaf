"""The Node authorizer: a kubelet reads only what the pods bound to it use.

A node identity is a user `system:node:<name>` in group `system:nodes` (the kubelet client
certificate a joining agent receives). For such users, as upstream's Node authorizer:

- Secrets and ConfigMaps: get, list and watch of one named object (a list or watch names it
  with `fieldSelector=metadata.name=x`) when a pod bound to the node refers to it (volumes,
  projected sources, env and envFrom, image pull secrets); PersistentVolumeClaims: get when a
  pod of the node mounts the claim; PersistentVolumes: get when such a claim is bound to it;
  ServiceAccount tokens (`serviceaccounts/<name>/token`): create for an account a pod of the
  node runs as. Otherwise no opinion, with upstream's reasons (`no relationship found
  between node 'n' and this object`, `can only get individual resources of this type`, …).
- Leases: get, create, update, patch and delete in `kube-node-lease`, and (but for create,
  whose name the authorizer cannot see; NodeRestriction checks it) only the node's own;
  CSINodes (storage.k8s.io) the same, named as the node.
- Everything else: the rules of upstream's `system:node` ClusterRole, held here, not bound
  through RBAC (as upstream since 1.8).

The relationships come from an informer on every pod, slimmed to what they refer to
(`references`), indexed by node, and one on PersistentVolumeClaims (a claim's volume).
Writes a node may make are narrowed further by `noderestriction`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.server.apiserver import bootstrappolicy
from k8py.server.apiserver.authz import ALLOW, NO_OPINION, Attributes, Decision
from k8py.server.apiserver.rbac import Rule

PODS = builtin("v1", "pods")
CLAIMS = builtin("v1", "persistentvolumeclaims")
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
LEASE_NAMESPACE = "kube-node-lease"
_READABLE = {"secrets": "secret", "configmaps": "configmap"}
_GETTABLE = {"persistentvolumeclaims": "pvc", "persistentvolumes": "pv"}


def node_name(user_name: str, groups: tuple[str, ...]) -> str | None:
    """The node a user is, or None when it is not a node identity."""
    if not user_name.startswith(NODE_PREFIX) or NODES_GROUP not in groups:
        return None
    return user_name[len(NODE_PREFIX):]


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or ():
            if isinstance(container, dict):
                yield container


def references(pod: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """(kind, name) of what a pod uses from its namespace: secret, configmap, pvc,
    serviceaccount."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = {("serviceaccount", spec.get("serviceAccountName")
                                   or spec.get("serviceAccount") or "default")}
    for secret in spec.get("imagePullSecrets") or ():
        if isinstance(secret, dict) and secret.get("name"):
            refs.add(("secret", secret["name"]))
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, dict):
            continue
        if (volume.get("secret") or {}).get("secretName"):
            refs.add(("secret", volume["secret"]["secretName"]))
        if (volume.get("configMap") or {}).get("name"):
            refs.add(("configmap", volume["configMap"]["name"]))
        if (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            refs.add(("pvc", volume["persistentVolumeClaim"]["claimName"]))
        for source in (volume.get("projected") or {}).get("sources") or ():
            if (source.get("secret") or {}).get("name"):
                refs.add(("secret", source["secret"]["name"]))
            if (source.get("configMap") or {}).get("name"):
                refs.add(("configmap", source["configMap"]["name"]))
        for kind in ("cephfs", "cinder", "flexVolume", "iscsi", "rbd", "scaleIO",
                     "storageos", "csi"):
            ref = (volume.get(kind) or {}).get("secretRef") or \
                (volume.get(kind) or {}).get("nodePublishSecretRef")
            if isinstance(ref, dict) and ref.get("name"):
                refs.add(("secret", ref["name"]))
        if (volume.get("azureFile") or {}).get("secretName"):  # a name, not a reference
            refs.add(("secret", volume["azureFile"]["secretName"]))
    for container in _containers(spec):
        for source in container.get("envFrom") or ():
            if (source.get("secretRef") or {}).get("name"):
                refs.add(("secret", source["secretRef"]["name"]))
            if (source.get("configMapRef") or {}).get("name"):
                refs.add(("configmap", source["configMapRef"]["name"]))
        for env in container.get("env") or ():
            value_from = env.get("valueFrom") or {} if isinstance(env, dict) else {}
            if (value_from.get("secretKeyRef") or {}).get("name"):
                refs.add(("secret", value_from["secretKeyRef"]["name"]))
            if (value_from.get("configMapKeyRef") or {}).get("name"):
                refs.add(("configmap", value_from["configMapKeyRef"]["name"]))
    return frozenset(refs)


def _slim(pod: dict[str, Any]) -> dict[str, Any]:
    """What the graph keeps of a pod: where it runs and what it uses."""
    metadata = pod["metadata"]
    return {"metadata": {"name": metadata["name"], "namespace": metadata.get("namespace"),
                         "resourceVersion": metadata.get("resourceVersion")},
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "refs": references(pod)}


class NodeGraph:
    """Which node uses which object, from the pods bound to each node."""

    def __init__(self, client: Client):
        self.pods = Informer(client, PODS, transform=_slim)
        self.claims = Informer(client, CLAIMS)
        self.pods.add_index("node", lambda pod: (pod["spec"]["nodeName"],)
                            if pod["spec"].get("nodeName") else ())
        self._tasks: list[asyncio.Task] = []
        self.synced = asyncio.Event()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.pods.run(), name="node-graph-pods"),
                       asyncio.create_task(self.claims.run(), name="node-graph-claims")]
        await asyncio.gather(self.pods.synced.wait(), self.claims.synced.wait())
        self.synced.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def uses(self, node: str, kind: str, namespace: str, name: str) -> bool:
        for pod in self.pods.by_index("node", node):
            if kind == "pv":
                if any(self._claim_volume(pod["metadata"]["namespace"], claim) == name
                       for ref_kind, claim in pod["refs"] if ref_kind == "pvc"):
                    return True
            elif pod["metadata"]["namespace"] == namespace and (kind, name) in pod["refs"]:
                return True
        return False

    def _claim_volume(self, namespace: str, claim: str) -> str | None:
        obj = self.claims.get_by_name(namespace, claim)
        return (obj.get("spec") or {}).get("volumeName") if obj else None


def system_node_rules() -> list[dict[str, Any]]:
    for role in bootstrappolicy.cluster_roles():
        if role["metadata"]["name"] == "system:node":
            return role["rules"]
    return []


class NodeAuthorizer:
    def __init__(self, graph: NodeGraph):
        self.graph = graph
        self.node_rules = tuple(Rule.of(rule) for rule in system_node_rules())

    def authorize(self, attributes: Attributes) -> Decision:
        node = node_name(attributes.user.name, attributes.user.groups)
        if node is None:
            return NO_OPINION, ""
        if not node:
            return NO_OPINION, f'unknown node for user "{attributes.user.name}"'
        if attributes.resource_request:
            group, resource = attributes.api_group, attributes.resource
            if group == "" and resource in _READABLE:
                return self._read(node, _READABLE[resource], attributes)
            if group == "" and resource in _GETTABLE:
                return self._get(node, _GETTABLE[resource], attributes)
            if group == "" and resource == "serviceaccounts":
                return self._token(node, attributes)
            if group == "coordination.k8s.io" and resource == "leases":
                return self._lease(node, attributes)
            if group == "storage.k8s.io" and resource == "csinodes":
                return self._csinode(node, attributes)
        if any(rule.allows(attributes) for rule in self.node_rules):
            return ALLOW, ""
        return NO_OPINION, ""

    def _related(self, node: str, kind: str, attributes: Attributes) -> Decision:
        if not attributes.name:
            return NO_OPINION, "No Object name found"
        if self.graph.uses(node, kind, attributes.namespace, attributes.name):
            return ALLOW, ""
        return NO_OPINION, f"no relationship found between node '{node}' and this object"

    def _read(self, node: str, kind: str, attributes: Attributes) -> Decision:
        if attributes.verb not in ("get", "list", "watch"):
            return NO_OPINION, "can only read resources of this type"
        if attributes.subresource:
            return NO_OPINION, "cannot read subresource"
        if not attributes.namespace:
            return NO_OPINION, "can only read namespaced object of this type"
        return self._related(node, kind, attributes)

    def _get(self, node: str, kind: str, attributes: Attributes) -> Decision:
        if attributes.verb != "get":
            return NO_OPINION, "can only get individual resources of this type"
        if attributes.subresource:
            return NO_OPINION, "cannot get subresource"
        return self._related(node, kind, attributes)

    def _token(self, node: str, attributes: Attributes) -> Decision:
        if attributes.verb != "create" or not attributes.name:
            return NO_OPINION, "can only create tokens for individual service accounts"
        if attributes.subresource != "token":
            return NO_OPINION, "can only create token subresource of serviceaccount"
        return self._related(node, "serviceaccount", attributes)

    def _lease(self, node: str, attributes: Attributes) -> Decision:
        if attributes.verb not in ("get", "create", "update", "patch", "delete"):
            return NO_OPINION, "can only get, create, update, patch, or delete a node lease"
        if attributes.namespace != LEASE_NAMESPACE:
            return NO_OPINION, (f'can only access leases in the "{LEASE_NAMESPACE}" system '
                                "namespace")
        if attributes.verb != "create" and attributes.name != node:
            return NO_OPINION, ("can only access node lease with the same name as the "
                                "requesting node")
        return ALLOW, ""

    def _csinode(self, node: str, attributes: Attributes) -> Decision:
        if attributes.verb not in ("get", "create", "update", "patch", "delete"):
            return NO_OPINION, "can only get, create, update, patch, or delete a CSINode"
        if attributes.subresource:
            return NO_OPINION, "cannot authorize CSINode subresources"
        # a create's name is not in the URL: NodeRestriction checks it
        if attributes.verb != "create" and attributes.name != node:
            return NO_OPINION, ("can only access CSINode with the same name as the requesting "
                                "node")
        return ALLOW, ""
