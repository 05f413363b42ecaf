"""NodeRestriction admission: what a node writes, it writes only about itself.

For writes by a node identity (`nodeauthz.node_name`), as upstream's plugin:
- Node: only its own (`node "a" is not allowed to modify node "b"`); on create it may not set
  labels outside the kubelet's own set (`node-restriction.kubernetes.io/` prefix, and
  kubernetes.io / k8s.io labels other than the kubelet's: hostname, arch, os, instance type,
  topology, `kubelet.kubernetes.io/`, `node.kubernetes.io/`); on update it may not change
  such labels (`is not allowed to modify labels: …`).
- Pod: create only mirror pods (annotation `kubernetes.io/config.mirror`) bound to itself
  and referring to no service account, secret, configmap or claim; delete only pods bound to
  itself; `status` of its own pods; `eviction` of its own pods; nothing else.
- Lease: create only its own (`kube-node-lease/<node>`; the authorizer checks the rest).
- `serviceaccounts/<sa>/token`: only tokens bound to a pod bound to itself.
Refusals are 403 `<resource> "<name>" is forbidden: <reason>`.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.server.apiserver import admission
from k8py.server.apiserver.nodeauthz import node_name, references

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RESTRICTED_LABEL_DOMAIN = "node-restriction.kubernetes.io"
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone"})
KUBELET_LABEL_DOMAINS = ("kubelet.kubernetes.io", "node.kubernetes.io")


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

    def __init__(self, pods_on=None):
        # pods_on(namespace, name) -> the stored pod or None: for token requests
        self.pods_on = pods_on

    async def admit(self, attributes: admission.Attributes) -> dict[str, Any] | None:
        return None

    async def validate(self, attributes: admission.Attributes) -> None:
        user = attributes.user
        if user is None:
            return
        node = node_name(user.name, user.groups)
        if node is None:
            return
        resource = attributes.resource
        key = (resource.group, resource.plural)
        if key == ("", "nodes"):
            self._node(attributes, node)
        elif key == ("", "pods"):
            self._pod(attributes, node)
        elif key == ("coordination.k8s.io", "leases") and \
                attributes.operation == admission.CREATE and attributes.name != node:
            self._refuse(attributes, "can only access node lease with the same name as the "
                                     "requesting node")
        elif key == ("", "serviceaccounts") and attributes.subresource == "token":
            await self._token(attributes, node)

    def _refuse(self, attributes: admission.Attributes, reason: str) -> None:
        resource = attributes.resource
        name = attributes.name or ((attributes.object or {}).get("metadata") or {}).get("name",
                                                                                      "")
        raise errors.forbidden(resource.plural, name, reason, resource.group)

    def _node(self, attributes: admission.Attributes, node: str) -> None:
        name = attributes.name or ((attributes.object or {}).get("metadata") or {}).get("name")
        if name != node:
            self._refuse(attributes, f'node "{node}" is not allowed to modify node "{name}"')
        if attributes.operation == admission.CREATE:
            bad = forbidden_labels(set(_labels(attributes.object)))
            if bad:
                self._refuse(attributes, f'node "{node}" is not allowed to set the following '
                                         f'labels: {", ".join(bad)}')
        elif attributes.operation == admission.UPDATE:
            new, old = _labels(attributes.object), _labels(attributes.old_object)
            changed = {k for k in set(new) | set(old) if new.get(k) != old.get(k)}
            bad = forbidden_labels(changed)
            if bad:
                self._refuse(attributes, f"is not allowed to modify labels: {', '.join(bad)}")

    def _pod(self, attributes: admission.Attributes, node: str) -> None:
        subresource = attributes.subresource or ""
        operation = attributes.operation
        pod = attributes.old_object if operation != admission.CREATE or subresource else \
            attributes.object
        bound = ((pod or {}).get("spec") or {}).get("nodeName")
        if subresource == "":
            if operation == admission.CREATE:
                self._mirror_pod(attributes, node)
            elif operation == admission.DELETE:
                if bound != node:
                    self._refuse(attributes, f'node "{node}" can only delete pods with '
                                             "spec.nodeName set to itself")
            else:
                self._refuse(attributes, f'unexpected operation "{operation}", node "{node}" '
                                         "can only create and delete mirror pods")
        elif subresource == "status":
            if operation != admission.UPDATE:
                self._refuse(attributes, f'unexpected operation "{operation}"')
            if bound != node:
                self._refuse(attributes, f'node "{node}" can only update pod status for pods '
                                         "with spec.nodeName set to itself")
        elif subresource == "eviction":
            if bound is not None and bound != node:
                self._refuse(attributes, f"node {node} can only evict pods with spec.nodeName "
                                         "set to itself")
        else:
            self._refuse(attributes, f'unexpected pod subresource "{subresource}", only '
                                     "'status' and 'eviction' are allowed")

    def _mirror_pod(self, attributes: admission.Attributes, node: str) -> None:
        pod = attributes.object or {}
        metadata = pod.get("metadata") or {}
        if MIRROR_ANNOTATION not in (metadata.get("annotations") or {}):
            self._refuse(attributes, f'pod does not have "{MIRROR_ANNOTATION}" annotation, '
                                     f'node "{node}" can only create mirror pods')
        if (pod.get("spec") or {}).get("nodeName") != node:
            self._refuse(attributes, f'node "{node}" can only create pods with spec.nodeName '
                                     "set to itself")
        for kind, _ in references(pod):
            if kind != "serviceaccount":
                plural = {"secret": "secrets", "configmap": "configmaps",
                          "pvc": "persistentvolumeclaims"}[kind]
                self._refuse(attributes, f'node "{node}" can not create pods that reference '
                                         f"{plural}")

    async def _token(self, attributes: admission.Attributes, node: str) -> None:
        spec = (attributes.object or {}).get("spec") or {}
        ref = spec.get("boundObjectRef") or {}
        if ref.get("kind") != "Pod":
            self._refuse(attributes, "node requested token not bound to a pod")
        pod = await self.pods_on(attributes.namespace, ref.get("name", "")) \
            if self.pods_on else None
        if pod is None or ref.get("uid") and pod["metadata"].get("uid") != ref.get("uid"):
            self._refuse(attributes, "node requested token bound to a pod that does not exist")
        if (pod.get("spec") or {}).get("nodeName") != node:
            self._refuse(attributes, "node requested token bound to a pod scheduled on a "
                                     "different node")
