"""The RBAC policy a server starts with: upstream's bootstrap roles and bindings
(`bootstrappolicy`), and k8py's own few, reconciled at every start as upstream's
`rbac/bootstrap-roles` post-start hook does.

Reconciling: a missing object is created; an existing one annotated
`rbac.authorization.kubernetes.io/autoupdate: "true"` gets the rules (or subjects) it lacks
added — nothing an admin added is removed; one whose annotation an admin set to "false" is
left alone. The aggregated roles (admin, edit, view) are filled by the ClusterRole
aggregation controller, not here.

k8py's additions, for what k8py runs that upstream runs as other components:
- `k8py:node`, bound to group `system:nodes`: an agent also runs the Service proxy, the
  cluster DNS, the overlay, the NetworkPolicy enforcer and the ingress controller (upstream:
  kube-proxy, CoreDNS, a CNI and an ingress controller, each with its own identity), so
  nodes may read Services, Endpoints, EndpointSlices, Namespaces, NetworkPolicies,
  Ingresses and IngressClasses, and list, watch and delete PersistentVolumes (a node
  removes the released local-path volumes on its disk);
- `k8py:ingress-secrets`, bound to service account `kube-system/k8py-ingress`: the
  ingress controller's TLS Secrets (nodes read Ingresses and IngressClasses through
  `k8py:node`, never Secrets their pods do not use);
  `k8py:ingress-token` (Role in kube-system, bound to group `system:nodes`): `create` on
  `serviceaccounts/token` of `k8py-ingress` alone, so a joined agent gets that account's
  token, which NodeRestriction lets through only bound to the agent's own Node;
  `k8py:controller:ingress-status-controller` writes the Ingresses' `status.loadBalancer`;
- `k8py:node-autoapprove-certificate-rotation`: nodes may ask for their client
  certificate's renewal (`selfnodeclient`), which the CSR approver then approves;
- `k8py:controller:service-lb-controller` and `k8py:controller:node-password-controller`
  for the two controllers k3s has and upstream has not (Service load balancer status; the
  node password Secrets in kube-system), bound to their service accounts, and
  `k8py:controller:local-path-provisioner` for k3s's local-path provisioner
  (`local-path-provisioner-service-account`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server.apiserver import bootstrappolicy
from k8py.server.apiserver.genericstore import GenericStore, WriteContext

GROUP_VERSION = "rbac.authorization.k8s.io/v1"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_ANNOTATIONS = {AUTOUPDATE: "true"}


def _object(kind: str, name: str, namespace: str | None = None, **fields: Any) -> dict:
    metadata: dict[str, Any] = {"name": name, "labels": dict(_LABELS),
                                "annotations": dict(_ANNOTATIONS)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": metadata, **fields}


def _rule(verbs: str, group: str, resources: str) -> dict[str, Any]:
    return {"verbs": verbs.split(), "apiGroups": [group], "resources": resources.split()}


def _controller_subject(name: str) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}]


def k8py_objects() -> list[dict[str, Any]]:
    """k8py's own roles and bindings (see the module's docstring)."""
    read = "get list watch"
    events = _rule("create patch update", "", "events")
    return [
        _object("ClusterRole", "k8py:node", rules=[
            _rule(read, "", "services endpoints namespaces"),
            _rule(read, "discovery.k8s.io", "endpointslices"),
            _rule(read, "networking.k8s.io", "networkpolicies ingresses ingressclasses"),
            # a node deletes the local-path volumes on its disk once released
            # (k8py.agent.localvolumes), as k3s's local-path-provisioner does
            _rule("list watch delete", "", "persistentvolumes")]),
        _object("ClusterRoleBinding", "k8py:node",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:node"},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                           "name": "system:nodes"}]),
        # the ingress controller's TLS Secrets, cluster-wide as k3s's Traefik account reads
        # them: never to nodes (the Node authorizer's promise), to this account only
        _object("ClusterRole", "k8py:ingress-secrets", rules=[_rule(read, "", "secrets")]),
        _object("ClusterRoleBinding", "k8py:ingress-secrets",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:ingress-secrets"},
                subjects=_controller_subject("k8py-ingress")),
        # a node may ask for that account's token (bound to itself: NodeRestriction) and
        # for no other account's through RBAC
        _object("Role", "k8py:ingress-token", "kube-system", rules=[
            {**_rule("create", "", "serviceaccounts/token"),
             "resourceNames": ["k8py-ingress"]}]),
        _object("RoleBinding", "k8py:ingress-token", "kube-system",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "k8py:ingress-token"},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                           "name": "system:nodes"}]),
        # candidates for the controller manager's and scheduler's leases watch their own
        # lease while they wait (`k8py.client.leaderelection`), to take over the moment it
        # expires; upstream's roles only get and update it
        _object("Role", "k8py:leader-election-watch", "kube-system", rules=[
            {**_rule("list watch", "coordination.k8s.io", "leases"),
             "resourceNames": ["kube-controller-manager", "kube-scheduler"]}]),
        _object("RoleBinding", "k8py:leader-election-watch", "kube-system",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "k8py:leader-election-watch"},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": "system:kube-controller-manager"},
                          {"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": "system:kube-scheduler"}]),
        _object("ClusterRole", "k8py:controller:ingress-status-controller", rules=[
            _rule(read, "networking.k8s.io", "ingresses ingressclasses"),
            _rule(read, "", "nodes"),
            _rule("patch update", "networking.k8s.io", "ingresses/status")]),
        _object("ClusterRoleBinding", "k8py:controller:ingress-status-controller",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:controller:ingress-status-controller"},
                subjects=_controller_subject("ingress-status-controller")),
        # kubelets renew their client certificates through CSRs, approved for them (what
        # kubeadm binds as kubeadm:node-autoapprove-certificate-rotation)
        _object("ClusterRoleBinding", "k8py:node-autoapprove-certificate-rotation",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:certificates.k8s.io:certificatesigningrequests:"
                                 "selfnodeclient"},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                           "name": "system:nodes"}]),
        _object("ClusterRole", "k8py:controller:service-lb-controller", rules=[
            _rule(read, "", "services nodes"),
            _rule("patch update", "", "services/status"), events]),
        _object("ClusterRoleBinding", "k8py:controller:service-lb-controller",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:controller:service-lb-controller"},
                subjects=_controller_subject("service-lb-controller")),
        _object("ClusterRole", "k8py:controller:local-path-provisioner", rules=[
            _rule("get list watch create delete", "", "persistentvolumes"),
            _rule(read, "", "persistentvolumeclaims nodes"),
            _rule(read, "storage.k8s.io", "storageclasses"), events]),
        _object("ClusterRoleBinding", "k8py:controller:local-path-provisioner",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:controller:local-path-provisioner"},
                subjects=_controller_subject("local-path-provisioner-service-account")),
        _object("Role", "k8py:controller:node-password-controller", "kube-system", rules=[
            _rule("get delete", "", "secrets")]),
        _object("RoleBinding", "k8py:controller:node-password-controller", "kube-system",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "k8py:controller:node-password-controller"},
                subjects=_controller_subject("node-password-controller")),
        _object("ClusterRole", "k8py:controller:node-password-controller", rules=[
            _rule(read, "", "nodes"), events]),
        _object("ClusterRoleBinding", "k8py:controller:node-password-controller",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "k8py:controller:node-password-controller"},
                subjects=_controller_subject("node-password-controller")),
    ]


def policy() -> list[dict[str, Any]]:
    """Every object reconciled at start, roles before the bindings that name them."""
    return [*bootstrappolicy.cluster_roles(), *bootstrappolicy.namespaced_roles(),
            *bootstrappolicy.cluster_role_bindings(),
            *bootstrappolicy.namespaced_role_bindings(), *k8py_objects()]


_PLURALS = {"ClusterRole": "clusterroles", "Role": "roles",
            "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings"}


def _missing(wanted: list, have: list) -> list:
    return [item for item in wanted if item not in have]


async def reconcile(writes: GenericStore, registry: Registry, context: WriteContext) -> None:
    for obj in policy():
        resource = registry.get("rbac.authorization.k8s.io", "v1", _PLURALS[obj["kind"]])
        metadata = obj["metadata"]
        namespace = metadata.get("namespace")
        try:
            await writes.create(resource, namespace, obj, context)
            continue
        except errors.AlreadyExists:
            pass
        if obj.get("aggregationRule"):
            continue  # the aggregation controller keeps its rules
        field = "subjects" if obj["kind"].endswith("Binding") else "rules"

        async def add_lacking(current: dict[str, Any], wanted=obj.get(field) or [],
                              field=field) -> dict[str, Any]:
            if (current["metadata"].get("annotations") or {}).get(AUTOUPDATE) != "true":
                return current
            lacking = _missing(wanted, current.get(field) or [])
            return {**current, field: [*(current.get(field) or []), *lacking]} \
                if lacking else current

        with contextlib.suppress(errors.NotFound):
            await writes.update(resource, namespace, metadata["name"], add_lacking, context)
