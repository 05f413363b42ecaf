"""NodeRestriction admission: what a node writes, it writes only about itself.

For writes by a node identity (`nodeauthz.node_name`), as upstream's plugin:
- Node: only its own (`node "a" is not allowed to modify node "b"`); on create it may not set
  labels outside the kubelet's own set (`node-restriction.kubernetes.io/` prefix, and
  kubernetes.io / k8s.io labels other than the kubelet's: hostname, arch, os, instance type,
  topology, `kubelet.kubernetes.io/`, `node.kubernetes.io/`) nor a configSource; on update
  it may not change such labels (`is not allowed to modify labels: …`), its taints, or set a
  new configSource.
- Pod: create only mirror pods (annotation `kubernetes.io/config.mirror`) bound to itself,
  owned by its Node object alone (a controller reference with the node's uid) and referring
  to no service account, secret, configmap, clusterTrustBundle or claim, checked in that
  order; delete only pods bound to itself; `status` of its own pods, labels and resource
  claim statuses unchanged; `eviction` of its own pods (looked up: a missing pod is a 404);
  nothing else.
- Lease and CSINode: only its own, and leases only in `kube-node-lease`.
- `serviceaccounts/<sa>/token`: only tokens bound (v1 Pod, name and uid) to a pod bound to
  itself. k8py's one exception (`INGRESS_ACCOUNT`): a token of `kube-system/k8py-ingress`
  bound (v1 Node, name and uid) to the requesting node itself, which is how a joined agent's
  ingress controller reads TLS Secrets (`k8py.agent.ingresstoken`); RBAC
  (`k8py:ingress-token`) is what allows the request at all, this only lets it through.
Refusals are 403 `<resource> "<name>" is forbidden: <reason>`; pods and nodes it must look
up come from the store (`pods_on`, `nodes_on`).
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.server.apiserver import admission
from k8py.server.apiserver.nodeauthz import LEASE_NAMESPACE, node_name, references

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RESTRICTED_LABEL_DOMAIN = "node-restriction.kubernetes.io"
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone"})
KUBELET_LABEL_DOMAINS = ("kubelet.kubernetes.io", "node.kubernetes.io")
# the service account whose tokens a node may bind to its own Node object (see above)
INGRESS_ACCOUNT = ("kube-system", "k8py-ingress")


def _domain(label: str) -> str:
    return label.split("/", 1)[0] if "/" in label else ""


def _in_domain(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def forbidden_labels(labels: set[str]) -> list[str]:
    """Labels a kubelet may not set (upstream's getForbiddenLabels), sorted."""
    out = []
    for label in labels:
        domain = _domain(label)
        if _in_domain(domain, RESTRICTED_LABEL_DOMAIN):
            out.append(label)
        elif (_in_domain(domain, "kubernetes.io") or _in_domain(domain, "k8s.io")) and \
                label not in KUBELET_LABELS and \
                not any(_in_domain(domain, d) for d in KUBELET_LABEL_DOMAINS):
            out.append(label)
    return sorted(out)


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class NodeRestriction:
    name = "NodeRestriction"

    def __init__(self, pods_on=None, nodes_on=None):
        # pods_on(namespace, name) / nodes_on(name) -> the stored object or None: for
        # evictions, token requests and the uid of a mirror pod's owner
        self.pods_on = pods_on
        self.nodes_on = nodes_on

    async def admit(self, attributes: admission.Attributes) -> dict[str, Any] | None:
        return None

    async def validate(self, attributes: admission.Attributes) -> None:
        user = attributes.user
        if user is None:
            return
        node = node_name(user.name, user.groups)
        if node is None:
            return
        if not node:
            self._refuse(attributes, f'could not determine node from user "{user.name}"')
        resource = attributes.resource
        key = (resource.group, resource.plural)
        if key == ("", "nodes"):
            self._node(attributes, node)
        elif key == ("", "pods"):
            await self._pod(attributes, node)
        elif key == ("coordination.k8s.io", "leases"):
            if attributes.namespace != LEASE_NAMESPACE:
                self._refuse(attributes, f'can only access leases in the "{LEASE_NAMESPACE}" '
                                         "system namespace")
            self._own(attributes, node, "node lease")
        elif key == ("storage.k8s.io", "csinodes"):
            self._own(attributes, node, "CSINode")
        elif key == ("", "serviceaccounts") and attributes.subresource == "token" and \
                attributes.operation == admission.CREATE:
            await self._token(attributes, node)

    def _refuse(self, attributes: admission.Attributes, reason: str) -> None:
        resource = attributes.resource
        name = attributes.name or _object_name(attributes.object)
        raise errors.forbidden(resource.plural, name, reason, resource.group)

    def _own(self, attributes: admission.Attributes, node: str, what: str) -> None:
        name = attributes.name or _object_name(attributes.object)
        if name != node:
            self._refuse(attributes, f"can only access {what} with the same name as the "
                                     "requesting node")

    def _node(self, attributes: admission.Attributes, node: str) -> None:
        name = attributes.name or _object_name(attributes.object)
        if name != node:
            self._refuse(attributes, f'node "{node}" is not allowed to modify node "{name}"')
        spec = (attributes.object or {}).get("spec") or {}
        if attributes.operation == admission.CREATE:
            if spec.get("configSource") is not None:
                self._refuse(attributes, f'node "{node}" is not allowed to create pods with a '
                                         "non-nil configSource")
            bad = forbidden_labels(set(_labels(attributes.object)))
            if bad:
                self._refuse(attributes, f'node "{node}" is not allowed to set the following '
                                         f'labels: {", ".join(bad)}')
        elif attributes.operation == admission.UPDATE:
            old_spec = (attributes.old_object or {}).get("spec") or {}
            if spec.get("configSource") is not None and \
                    spec.get("configSource") != old_spec.get("configSource"):
                self._refuse(attributes, f'node "{node}" is not allowed to update configSource '
                                         "to a new non-nil configSource")
            # an empty list and none are the same taints (Semantic.DeepEqual of nil slices)
            if (spec.get("taints") or []) != (old_spec.get("taints") or []):
                self._refuse(attributes, f'node "{node}" is not allowed to modify taints')
            new, old = _labels(attributes.object), _labels(attributes.old_object)
            changed = {k for k in set(new) | set(old) if new.get(k) != old.get(k)}
            bad = forbidden_labels(changed)
            if bad:
                self._refuse(attributes, f"is not allowed to modify labels: {', '.join(bad)}")

    async def _pod(self, attributes: admission.Attributes, node: str) -> None:
        subresource = attributes.subresource or ""
        operation = attributes.operation
        if subresource == "":
            if operation == admission.CREATE:
                await self._mirror_pod(attributes, node)
            elif operation == admission.DELETE:
                bound = ((attributes.old_object or {}).get("spec") or {}).get("nodeName")
                if bound != node:
                    self._refuse(attributes, f'node "{node}" can only delete pods with '
                                             "spec.nodeName set to itself")
            else:
                self._refuse(attributes, f'unexpected operation "{operation}", node "{node}" '
                                         "can only create and delete mirror pods")
        elif subresource == "status":
            self._pod_status(attributes, node)
        elif subresource == "eviction":
            await self._eviction(attributes, node)
        else:
            self._refuse(attributes, f'unexpected pod subresource "{subresource}", only '
                                     "'status' and 'eviction' are allowed")

    def _pod_status(self, attributes: admission.Attributes, node: str) -> None:
        if attributes.operation != admission.UPDATE:
            self._refuse(attributes, f'unexpected operation "{attributes.operation}"')
        old, new = attributes.old_object or {}, attributes.object or {}
        if (old.get("spec") or {}).get("nodeName") != node:
            self._refuse(attributes, f'node "{node}" can only update pod status for pods '
                                     "with spec.nodeName set to itself")
        if _labels(old) != _labels(new):
            self._refuse(attributes, f'node "{node}" cannot update labels through pod status')
        if _claim_statuses(old) != _claim_statuses(new):
            # upstream's spelling
            self._refuse(attributes, f'node "{node}" cannot update resource claim statues')

    async def _eviction(self, attributes: admission.Attributes, node: str) -> None:
        if attributes.operation != admission.CREATE:
            self._refuse(attributes, f"unexpected operation {attributes.operation}")
        # the pod named by the URL, else by the Eviction (upstream's order)
        name = attributes.name or _object_name(attributes.object)
        if not name:
            self._refuse(attributes, "could not determine pod from request data")
        pod = await self.pods_on(attributes.namespace, name) if self.pods_on else None
        if pod is None:
            raise errors.not_found("pods", name)
        if (pod.get("spec") or {}).get("nodeName") != node:
            self._refuse(attributes, f"node {node} can only evict pods with spec.nodeName set "
                                     "to itself")

    async def _mirror_pod(self, attributes: admission.Attributes, node: str) -> None:
        pod = attributes.object or {}
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if MIRROR_ANNOTATION not in (metadata.get("annotations") or {}):
            self._refuse(attributes, f'pod does not have "{MIRROR_ANNOTATION}" annotation, '
                                     f'node "{node}" can only create mirror pods')
        if spec.get("nodeName") != node:
            self._refuse(attributes, f'node "{node}" can only create pods with spec.nodeName '
                                     "set to itself")
        await self._mirror_owner(attributes, node, metadata.get("ownerReferences") or [])
        if spec.get("serviceAccountName") or spec.get("serviceAccount"):
            self._refuse(attributes, f'node "{node}" can not create pods that reference a '
                                     "service account")
        refs = {kind for kind, _ in references(pod)}
        for kind, plural in (("secret", "secrets"), ("configmap", "configmaps")):
            if kind in refs:
                self._refuse(attributes, f'node "{node}" can not create pods that reference '
                                         f"{plural}")
        volumes = [v for v in spec.get("volumes") or () if isinstance(v, dict)]
        if any(isinstance(source, dict) and source.get("clusterTrustBundle")
               for v in volumes for source in (v.get("projected") or {}).get("sources") or ()):
            self._refuse(attributes, f'node "{node}" can not create pods that reference '
                                     "clustertrustbundles")
        if any(v.get("persistentVolumeClaim") for v in volumes):
            self._refuse(attributes, f'node "{node}" can not create pods that reference '
                                     "persistentvolumeclaims")

    async def _mirror_owner(self, attributes: admission.Attributes, node: str,
                            owners: list[Any]) -> None:
        """A mirror pod is owned by its node's Node object, and by nothing else."""
        if len(owners) > 1:
            self._refuse(attributes, f'node "{node}" can only create pods with a single owner '
                                     "reference set to itself")
        if not owners:
            self._refuse(attributes, f'node "{node}" can only create pods with an owner '
                                     "reference set to itself")
        owner = owners[0] if isinstance(owners[0], dict) else {}
        if owner.get("apiVersion") != "v1" or owner.get("kind") != "Node" or \
                owner.get("name") != node:
            self._refuse(attributes, f'node "{node}" can only create pods with an owner '
                                     "reference set to itself")
        if owner.get("controller") is not True:
            self._refuse(attributes, f'node "{node}" can only create pods with a controller '
                                     "owner reference set to itself")
        if owner.get("blockOwnerDeletion") is True:
            self._refuse(attributes, f'node "{node}" must not set blockOwnerDeletion on an '
                                     "owner reference")
        stored = await self.nodes_on(node) if self.nodes_on else None
        if stored is None:
            raise errors.not_found("nodes", node)
        uid = stored["metadata"].get("uid", "")
        if owner.get("uid", "") != uid:
            self._refuse(attributes, f"node {node} UID mismatch: expected "
                                     f"{owner.get('uid', '')} got {uid}")

    async def _token(self, attributes: admission.Attributes, node: str) -> None:
        spec = (attributes.object or {}).get("spec")
        ref = spec.get("boundObjectRef") if isinstance(spec, dict) else None
        if (attributes.namespace, attributes.name) == INGRESS_ACCOUNT and \
                isinstance(ref, dict) and ref.get("kind") == "Node":
            return await self._own_node_token(attributes, node, ref)
        if not isinstance(ref, dict) or ref.get("apiVersion") != "v1" or \
                ref.get("kind") != "Pod" or not ref.get("name"):
            self._refuse(attributes, "node requested token not bound to a pod")
        if not ref.get("uid"):
            self._refuse(attributes, "node requested token with a pod binding without a uid")
        pod = await self.pods_on(attributes.namespace, ref["name"]) if self.pods_on else None
        if pod is None:
            raise errors.not_found("pods", ref["name"])
        if pod["metadata"].get("uid") != ref["uid"]:
            self._refuse(attributes, f"the UID in the bound object reference ({ref['uid']}) "
                                     "does not match the UID in record. The object might have "
                                     "been deleted and then recreated")
        if (pod.get("spec") or {}).get("nodeName") != node:
            self._refuse(attributes, "node requested token bound to a pod scheduled on a "
                                     "different node")


    async def _own_node_token(self, attributes: admission.Attributes, node: str,
                              ref: dict[str, Any]) -> None:
        """The ingress account's token, bound to the requesting node and no other: it dies
        with that Node object (the authenticator checks the uid)."""
        if ref.get("apiVersion") != "v1" or ref.get("name") != node:
            self._refuse(attributes, "node requested token bound to a different node")
        if not ref.get("uid"):
            self._refuse(attributes, "node requested token with a node binding without a uid")
        stored = await self.nodes_on(node) if self.nodes_on else None
        if stored is None:
            raise errors.not_found("nodes", node)
        if stored["metadata"].get("uid") != ref["uid"]:
            self._refuse(attributes, f"the UID in the bound object reference ({ref['uid']}) "
                                     "does not match the UID in record. The object might have "
                                     "been deleted and then recreated")


def _object_name(obj: Any) -> str:
    """The name in a request's body, if it has one (an eviction's body may be anything)."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _claim_statuses(pod: dict[str, Any]) -> list[tuple[Any, Any]]:
    """What upstream compares of status.resourceClaimStatuses: names and claim names."""
    return [(s.get("name"), s.get("resourceClaimName"))
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or ()
            if isinstance(s, dict)]
