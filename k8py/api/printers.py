"""Upstream's printers: the columns `kubectl get` shows for each kind, and how each cell is
computed from an object (pkg/printers/internalversion/printers.go).

Column names are in Title Case (kubectl upper-cases them), `priority: 1` marks the `-o wide`
extras, ages are written as `duration.HumanDuration` writes them. Kinds without a printer get
NAME and AGE, as upstream prints custom resources without printer columns; Roles and
ClusterRoles, which have no printer upstream either, get the API server's default table
(NAME, CREATED AT) as upstream's do. `tables` assembles the Table from these columns.
"""

from __future__ import annotations

from k8py.api import cells
from k8py.api.cells import Column
from k8py.api.selectors import format_label_selector

PRINTERS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        cells.NAME,
        ("Ready", "string", 0, cells.pod_ready),
        ("Status", "string", 0, cells.pod_status),
        ("Restarts", "string", 0, cells.pod_restarts),
        cells.AGE,
        ("IP", "string", 1, lambda o, n: cells.or_none(cells.get(o, "status", "podIP"))),
        ("Node", "string", 1, lambda o, n: cells.or_none(cells.get(o, "spec", "nodeName"))),
        ("Nominated Node", "string", 1,
         lambda o, n: cells.or_none(cells.get(o, "status", "nominatedNodeName"))),
        ("Readiness Gates", "string", 1, cells.pod_gates),
    ],
    ("apps", "deployments"): [
        cells.NAME,
        ("Ready", "string", 0, cells.ready_of_desired),
        ("Up-to-date", "integer", 0, cells.count("status", "updatedReplicas")),
        ("Available", "integer", 0, cells.count("status", "availableReplicas")),
        cells.AGE,
        *cells.wide_workload("spec", "template", "spec"),
    ],
    ("apps", "replicasets"): [
        cells.NAME,
        ("Desired", "integer", 0, lambda o, n: cells.get(o, "spec", "replicas", default=1)),
        ("Current", "integer", 0, cells.count("status", "replicas")),
        ("Ready", "integer", 0, cells.count("status", "readyReplicas")),
        cells.AGE,
        *cells.wide_workload("spec", "template", "spec"),
    ],
    ("apps", "statefulsets"): [
        cells.NAME,
        ("Ready", "string", 0, cells.ready_of_desired),
        cells.AGE,
        *cells.wide_workload("spec", "template", "spec")[:2],
    ],
    ("apps", "daemonsets"): [
        cells.NAME,
        ("Desired", "integer", 0, cells.count("status", "desiredNumberScheduled")),
        ("Current", "integer", 0, cells.count("status", "currentNumberScheduled")),
        ("Ready", "integer", 0, cells.count("status", "numberReady")),
        ("Up-to-date", "integer", 0, cells.count("status", "updatedNumberScheduled")),
        ("Available", "integer", 0, cells.count("status", "numberAvailable")),
        ("Node Selector", "string", 0,
         cells.key_values("spec", "template", "spec", "nodeSelector")),
        cells.AGE,
        *cells.wide_workload("spec", "template", "spec"),
    ],
    ("", "services"): [
        cells.NAME,
        ("Type", "string", 0, lambda o, n: cells.get(o, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o, n: cells.or_none(cells.get(o, "spec", "clusterIP"))),
        ("External-IP", "string", 0, cells.external_ips),
        ("Port(s)", "string", 0, cells.service_ports),
        cells.AGE,
        ("Selector", "string", 1, cells.key_values("spec", "selector")),
    ],
    ("", "namespaces"): [
        cells.NAME,
        ("Status", "string", 0, lambda o, n: cells.get(o, "status", "phase", default="")),
        cells.AGE,
    ],
    ("", "nodes"): [
        cells.NAME,
        ("Status", "string", 0, cells.node_status),
        ("Roles", "string", 0, cells.node_roles),
        cells.AGE,
        ("Version", "string", 0, lambda o, n: cells.get(o, "status", "nodeInfo", "kubeletVersion",
                                                   default="")),
        ("Internal-IP", "string", 1, cells.node_address("InternalIP")),
        ("External-IP", "string", 1, cells.node_address("ExternalIP")),
        ("OS-Image", "string", 1, lambda o, n: cells.get(o, "status", "nodeInfo", "osImage",
                                                    default="<unknown>")),
        ("Kernel-Version", "string", 1, lambda o, n: cells.get(o, "status", "nodeInfo",
                                                          "kernelVersion", default="<unknown>")),
        ("Container-Runtime", "string", 1, lambda o, n: cells.get(
            o, "status", "nodeInfo", "containerRuntimeVersion", default="<unknown>")),
    ],
    ("", "configmaps"): [
        cells.NAME,
        ("Data", "integer", 0, lambda o, n: len(o.get("data") or {}) +
         len(o.get("binaryData") or {})),
        cells.AGE,
    ],
    ("", "secrets"): [
        cells.NAME,
        ("Type", "string", 0, lambda o, n: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o, n: len(o.get("data") or {})),
        cells.AGE,
    ],
    ("", "serviceaccounts"): [
        cells.NAME,
        ("Secrets", "integer", 0, lambda o, n: len(o.get("secrets") or [])),
        cells.AGE,
    ],
    ("", "endpoints"): [cells.NAME, ("Endpoints", "string", 0, cells.endpoints), cells.AGE],
    ("batch", "jobs"): [
        cells.NAME,
        ("Status", "string", 0, cells.job_status),
        ("Completions", "string", 0, cells.job_completions),
        ("Duration", "string", 0, cells.job_duration),
        cells.AGE,
        *cells.wide_workload("spec", "template", "spec"),
    ],
    ("batch", "cronjobs"): [
        cells.NAME,
        ("Schedule", "string", 0, lambda o, n: cells.get(o, "spec", "schedule", default="")),
        ("Timezone", "string", 0, lambda o, n: cells.get(o, "spec", "timeZone", default="<none>")),
        ("Suspend", "boolean", 0, lambda o, n: cells.bool_text(cells.get(o, "spec", "suspend"))),
        ("Active", "integer", 0, lambda o, n: len(cells.get(o, "status", "active", default=[]))),
        ("Last Schedule", "string", 0, lambda o, n: cells.since(
            cells.get(o, "status", "lastScheduleTime"), n) if cells.get(o, "status", "lastScheduleTime")
         else "<none>"),
        cells.AGE,
        *cells.wide_workload("spec", "jobTemplate", "spec", "template", "spec")[:2],
        ("Selector", "string", 1, lambda o, n: format_label_selector(
            cells.get(o, "spec", "jobTemplate", "spec", "selector")) or "<none>"),
    ],
    ("discovery.k8s.io", "endpointslices"): [
        cells.NAME,
        ("AddressType", "string", 0, lambda o, n: o.get("addressType", "")),
        ("Ports", "string", 0, cells.slice_ports),
        ("Endpoints", "string", 0, cells.slice_endpoints),
        cells.AGE,
    ],
    ("policy", "poddisruptionbudgets"): [
        cells.NAME,
        ("Min Available", "string", 0, cells.int_or_na("spec", "minAvailable")),
        ("Max Unavailable", "string", 0, cells.int_or_na("spec", "maxUnavailable")),
        ("Allowed Disruptions", "integer", 0, cells.count("status", "disruptionsAllowed")),
        cells.AGE,
    ],
    ("apps", "controllerrevisions"): [
        cells.NAME,
        ("Controller", "string", 0, cells.controller_name),
        ("Revision", "string", 0, lambda o, n: o.get("revision", 0)),
        cells.AGE,
    ],
    ("networking.k8s.io", "networkpolicies"): [
        cells.NAME,
        ("Pod-Selector", "string", 0, cells.pod_selector),
        cells.AGE,
    ],
    ("networking.k8s.io", "ingresses"): [
        cells.NAME,
        ("Class", "string", 0, lambda o, n: cells.get(o, "spec", "ingressClassName",
                                                 default="<none>")),
        ("Hosts", "string", 0, cells.ingress_hosts),
        ("Address", "string", 0, cells.load_balancer),
        ("Ports", "string", 0, lambda o, n: "80, 443" if cells.get(o, "spec", "tls") else "80"),
        cells.AGE,
    ],
    ("", "resourcequotas"): [
        cells.NAME,
        cells.AGE,
        ("Request", "string", 0, cells.quota(limits=False)),
        ("Limit", "string", 0, cells.quota(limits=True)),
    ],
    ("scheduling.k8s.io", "priorityclasses"): [
        cells.NAME,
        ("Value", "integer", 0, lambda o, n: o.get("value", 0)),
        ("Global-Default", "boolean", 0, lambda o, n: bool(o.get("globalDefault", False))),
        cells.AGE,
        ("PreemptionPolicy", "string", 0, lambda o, n: o.get("preemptionPolicy", "")),
    ],
    **{("rbac.authorization.k8s.io", plural): [
        cells.NAME,
        ("Role", "string", 0, lambda o, n: f"{cells.get(o, 'roleRef', 'kind', default='')}/"
                                           f"{cells.get(o, 'roleRef', 'name', default='')}"),
        cells.AGE,
        ("Users", "string", 1, cells.subjects("User")),
        ("Groups", "string", 1, cells.subjects("Group")),
        ("ServiceAccounts", "string", 1, cells.subjects("ServiceAccount")),
    ] for plural in ("rolebindings", "clusterrolebindings")},
    # no printer upstream: the API server's default table, cells.NAME and CREATED AT
    **{("rbac.authorization.k8s.io", plural): [cells.NAME, ("Created At", "date", 0, cells.created_at)]
       for plural in ("roles", "clusterroles")},
    ("", "limitranges"): [cells.NAME, ("Created At", "date", 0, cells.created_at)],
    ("certificates.k8s.io", "certificatesigningrequests"): [
        cells.NAME,
        cells.AGE,
        ("SignerName", "string", 0, lambda o, n: cells.get(o, "spec", "signerName", default="")),
        ("Requestor", "string", 0, lambda o, n: cells.get(o, "spec", "username", default="")),
        ("RequestedDuration", "string", 0, cells.csr_duration),
        ("Condition", "string", 0, cells.csr_condition),
    ],
    ("apiregistration.k8s.io", "apiservices"): [
        cells.NAME,
        ("Service", "string", 0, cells.apiservice_service),
        ("Available", "string", 0, cells.apiservice_available),
        cells.AGE,
    ],
    ("autoscaling", "horizontalpodautoscalers"): [
        cells.NAME,
        ("Reference", "string", 0, cells.hpa_reference),
        ("Targets", "string", 0, cells.hpa_targets),
        ("MinPods", "string", 0, cells.hpa_min_pods),
        ("MaxPods", "integer", 0, lambda o, n: cells.get(o, "spec", "maxReplicas", default=0)),
        ("Replicas", "integer", 0, cells.count("status", "currentReplicas")),
        cells.AGE,
    ],
    ("coordination.k8s.io", "leases"): [
        cells.NAME,
        ("Holder", "string", 0, lambda o, n: cells.get(o, "spec", "holderIdentity", default="")),
        cells.AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", 0, lambda o, n: cells.since(
            o.get("lastTimestamp") or o.get("eventTime") or
            cells.get(o, "metadata", "creationTimestamp"), n)),
        ("Type", "string", 0, lambda o, n: o.get("type", "")),
        ("Reason", "string", 0, lambda o, n: o.get("reason", "")),
        ("Object", "string", 0, lambda o, n: f"{cells.get(o, 'involvedObject', 'kind', default='')}"
                                             f"/{cells.get(o, 'involvedObject', 'name', default='')}"
                                             .lower()),
        ("Message", "string", 0, lambda o, n: (o.get("message") or "").strip()),
    ],
}
# A ReplicationController prints as a ReplicaSet does (its selector is a plain map:
# `cells.selector` reads both).
PRINTERS[("", "replicationcontrollers")] = PRINTERS[("apps", "replicasets")]


# --- storage: claims, volumes, classes -------------------------------------------------------

def _access_modes(modes) -> str:
    """upstream's helper.GetAccessModesAsString: RWO, ROX, RWX, RWOP in that order."""
    given = set(modes or ())
    return ",".join(short for mode, short in (
        ("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP")) if mode in given)


def _storage_phase(obj, now) -> str:
    if cells.get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    return cells.get(obj, "status", "phase", default="")


def _storage_class(obj, now) -> str:
    """The beta annotation wins over spec.storageClassName, as upstream's helpers read it."""
    annotations = cells.get(obj, "metadata", "annotations", default=None) or {}
    return annotations.get("volume.beta.kubernetes.io/storage-class") or \
        cells.get(obj, "spec", "storageClassName", default="") or ""


def _claim_bound(obj, value: str) -> str:
    return value if cells.get(obj, "spec", "volumeName", default="") else ""


def _class_name(obj, now) -> str:
    annotations = cells.get(obj, "metadata", "annotations", default=None) or {}
    default = any(annotations.get(a) == "true" for a in (
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class"))
    return obj["metadata"]["name"] + (" (default)" if default else "")


def _or_unset(*path):
    return lambda o, n: cells.get(o, *path, default=None) or "<unset>"


PRINTERS.update({
    ("", "persistentvolumes"): [
        cells.NAME,
        ("Capacity", "string", 0, lambda o, n: cells.get(o, "spec", "capacity", "storage",
                                                         default="0")),
        ("Access Modes", "string", 0, lambda o, n: _access_modes(
            cells.get(o, "spec", "accessModes", default=None))),
        ("Reclaim Policy", "string", 0, lambda o, n: cells.get(
            o, "spec", "persistentVolumeReclaimPolicy", default="")),
        ("Status", "string", 0, _storage_phase),
        ("Claim", "string", 0, lambda o, n: (
            f"{cells.get(o, 'spec', 'claimRef', 'namespace', default='')}/"
            f"{cells.get(o, 'spec', 'claimRef', 'name', default='')}"
            if cells.get(o, "spec", "claimRef", default=None) else "")),
        ("StorageClass", "string", 0, _storage_class),
        ("VolumeAttributesClass", "string", 0, _or_unset("spec", "volumeAttributesClassName")),
        ("Reason", "string", 0, lambda o, n: cells.get(o, "status", "reason", default="")),
        cells.AGE,
        ("VolumeMode", "string", 1, _or_unset("spec", "volumeMode")),
    ],
    ("", "persistentvolumeclaims"): [
        cells.NAME,
        ("Status", "string", 0, _storage_phase),
        ("Volume", "string", 0, lambda o, n: cells.get(o, "spec", "volumeName", default="")),
        ("Capacity", "string", 0, lambda o, n: _claim_bound(
            o, cells.get(o, "status", "capacity", "storage", default="0"))),
        ("Access Modes", "string", 0, lambda o, n: _claim_bound(
            o, _access_modes(cells.get(o, "status", "accessModes", default=None)))),
        ("StorageClass", "string", 0, _storage_class),
        ("VolumeAttributesClass", "string", 0, _or_unset("spec", "volumeAttributesClassName")),
        cells.AGE,
        ("VolumeMode", "string", 1, _or_unset("spec", "volumeMode")),
    ],
    ("storage.k8s.io", "storageclasses"): [
        ("Name", "string", 0, _class_name),
        ("Provisioner", "string", 0, lambda o, n: o.get("provisioner", "")),
        ("ReclaimPolicy", "string", 0, lambda o, n: o.get("reclaimPolicy") or "Delete"),
        ("VolumeBindingMode", "string", 0,
         lambda o, n: o.get("volumeBindingMode") or "Immediate"),
        ("AllowVolumeExpansion", "string", 0,
         lambda o, n: bool(o.get("allowVolumeExpansion", False))),
        cells.AGE,
    ],
})


def columns_for(group: str, plural: str) -> list[Column]:
    return PRINTERS.get((group, plural), [cells.NAME, cells.AGE])
