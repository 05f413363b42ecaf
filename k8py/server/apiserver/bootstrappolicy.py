"""Upstream's RBAC bootstrap policy as data: the ClusterRoles, ClusterRoleBindings, Roles and
RoleBindings a Kubernetes 1.33 API server creates at start, with its default feature gates
(upstream `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`: `policy.go`,
`controller_policy.go`, `namespace_policy.go`; their `testdata/*.yaml` show the objects).

What the functions return are complete rbac.authorization.k8s.io/v1 objects, fresh on every
call (callers may change them):
- every object is labelled `kubernetes.io/bootstrapping: rbac-defaults` and annotated
  `rbac.authorization.kubernetes.io/autoupdate: "true"` (upstream reconciles such objects at
  start; an admin who sets the annotation to "false" keeps their edits);
- a rule's lists are sorted, as upstream's rule builder sorts them, and empty lists are left
  out (`omitempty`), so a rule reads back exactly as a real cluster serves it;
- `admin`, `edit` and `view` carry only an `aggregationRule` and empty `rules`: upstream's
  clusterrole-aggregation controller fills them in from the roles their selectors match
  (`system:aggregate-to-*`, and `view` into `edit` into `admin` through their labels);
- each `system:controller:<name>` ClusterRole is bound to the ServiceAccount
  `kube-system/<name>` that kube-controller-manager runs that controller as;
- the `system:node` ClusterRoleBinding exists with no subjects: since 1.7 nodes get their
  powers from the Node authorizer, and upstream keeps the binding only so reconciliation can
  empty old ones.

Left out, as upstream leaves them out under 1.33's default gates: everything behind
DynamicResourceAllocation, ClusterTrustBundle, VolumeAttributesClass, StorageVersionAPI,
StorageVersionMigrator, PodCertificateRequest, KubeletServiceAccountTokenForCredentialProviders
and the component z-pages. In: MultiCIDRServiceAllocator (GA), KubeletFineGrainedAuthz and
SELinuxChangePolicy (beta, on).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

API_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
CONTROLLER_PREFIX = "system:controller:"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

# API groups, by upstream's names for them.
CORE = ""
APPS = "apps"
AUTHN = "authentication.k8s.io"
AUTHZ = "authorization.k8s.io"
AUTOSCALING = "autoscaling"
BATCH = "batch"
CERTIFICATES = "certificates.k8s.io"
COORDINATION = "coordination.k8s.io"
DISCOVERY = "discovery.k8s.io"
EVENTS = "events.k8s.io"
EXTENSIONS = "extensions"
NETWORKING = "networking.k8s.io"
POLICY = "policy"
STORAGE = "storage.k8s.io"

# Verb sets, as upstream's `Read`, `Write`, `ReadWrite`, `ReadUpdate`.
READ = "get list watch"
WRITE = "create update patch delete deletecollection"
READ_WRITE = READ + " " + WRITE
READ_UPDATE = READ + " update patch"


def rule(verbs: str, groups: Iterable[str], resources: str, names: str = "") -> dict:
    """A resource rule. `verbs`, `resources` and `names` are space-separated words; `groups`
    is a list of API groups (CORE is the empty string, which words cannot spell)."""
    out = {"verbs": sorted(verbs.split()), "apiGroups": sorted(groups),
           "resources": sorted(resources.split())}
    if names:
        out["resourceNames"] = sorted(names.split())
    return out


def urls(verbs: str, paths: str) -> dict:
    """A non-resource rule: `verbs` on the space-separated URL `paths`."""
    return {"verbs": sorted(verbs.split()), "nonResourceURLs": sorted(paths.split())}


def events_rule() -> dict:
    """What every component that records events is given (upstream's `eventsRule`)."""
    return rule("create update patch", [CORE, EVENTS], "events")


def controller_role_name(controller: str) -> str:
    """The ClusterRole (and binding) name for a kube-controller-manager controller, whose
    ServiceAccount in kube-system is `controller`."""
    return CONTROLLER_PREFIX + controller


# ---- the base ClusterRoles (policy.go) -----------------------------------------------------

def _view_rules() -> list[dict]:
    # Read access to what a namespace holds, except what escalates (secrets, exec, proxy).
    return [
        rule(READ, [CORE], "pods replicationcontrollers replicationcontrollers/scale "
             "serviceaccounts services services/status endpoints persistentvolumeclaims "
             "persistentvolumeclaims/status configmaps"),
        rule(READ, [CORE], "limitranges resourcequotas bindings events pods/status "
             "resourcequotas/status namespaces/status replicationcontrollers/status pods/log"),
        # reading namespaces at namespace scope means reading *this* namespace
        rule(READ, [CORE], "namespaces"),
        rule(READ, [DISCOVERY], "endpointslices"),
        rule(READ, [APPS], "controllerrevisions statefulsets statefulsets/status "
             "statefulsets/scale daemonsets daemonsets/status deployments deployments/status "
             "deployments/scale replicasets replicasets/status replicasets/scale"),
        rule(READ, [AUTOSCALING], "horizontalpodautoscalers horizontalpodautoscalers/status"),
        rule(READ, [BATCH], "jobs cronjobs cronjobs/status jobs/status"),
        rule(READ, [EXTENSIONS], "daemonsets daemonsets/status deployments deployments/scale "
             "deployments/status ingresses ingresses/status replicasets replicasets/scale "
             "replicasets/status replicationcontrollers/scale networkpolicies"),
        rule(READ, [POLICY], "poddisruptionbudgets poddisruptionbudgets/status"),
        rule(READ, [NETWORKING], "networkpolicies ingresses ingresses/status"),
    ]


def _edit_rules() -> list[dict]:
    # Everything a user does in a namespace, but not /status, quota or limits (the system's).
    return [
        rule(READ, [CORE], "pods/attach pods/proxy pods/exec pods/portforward secrets "
             "services/proxy"),
        rule("impersonate", [CORE], "serviceaccounts"),
        rule(WRITE, [CORE], "pods pods/attach pods/proxy pods/exec pods/portforward"),
        rule("create", [CORE], "pods/eviction"),
        rule(WRITE, [CORE], "replicationcontrollers replicationcontrollers/scale "
             "serviceaccounts services services/proxy persistentvolumeclaims configmaps "
             "secrets events"),
        rule("create", [CORE], "serviceaccounts/token"),
        rule(WRITE, [APPS], "statefulsets statefulsets/scale daemonsets deployments "
             "deployments/scale deployments/rollback replicasets replicasets/scale"),
        rule(WRITE, [AUTOSCALING], "horizontalpodautoscalers"),
        rule(WRITE, [BATCH], "jobs cronjobs"),
        rule(WRITE, [EXTENSIONS], "daemonsets deployments deployments/scale "
             "deployments/rollback ingresses replicasets replicasets/scale "
             "replicationcontrollers/scale networkpolicies"),
        rule(WRITE, [POLICY], "poddisruptionbudgets"),
        rule(WRITE, [NETWORKING], "networkpolicies ingresses"),
        rule(READ_WRITE, [COORDINATION], "leases"),
    ]


def _node_rules() -> list[dict]:
    # The Node authorizer and NodeRestriction narrow most of these to the node's own objects.
    return [
        rule("create", [AUTHN], "tokenreviews"),
        rule("create", [AUTHZ], "subjectaccessreviews localsubjectaccessreviews"),
        rule(READ, [CORE], "services"),
        rule("create get list watch", [CORE], "nodes"),
        rule("update patch", [CORE], "nodes/status"),
        rule("update patch", [CORE], "nodes"),
        rule("create update patch", [CORE], "events"),
        rule(READ, [CORE], "pods"),
        rule("create delete", [CORE], "pods"),  # mirror pods
        rule("update patch", [CORE], "pods/status"),
        rule("create", [CORE], "pods/eviction"),
        rule("get list watch", [CORE], "secrets configmaps"),
        rule("get", [CORE], "persistentvolumeclaims persistentvolumes"),
        rule("get", [CORE], "endpoints"),
        rule("create get list watch", [CERTIFICATES], "certificatesigningrequests"),
        rule("get create update patch delete", [COORDINATION], "leases"),
        rule("get", [STORAGE], "volumeattachments"),
        rule("create", [CORE], "serviceaccounts/token"),
        rule("get update patch", [CORE], "persistentvolumeclaims/status"),
        rule("get watch list", [STORAGE], "csidrivers"),
        rule("get create update patch delete", [STORAGE], "csinodes"),
        rule("get list watch", ["node.k8s.io"], "runtimeclasses"),
    ]


def _approver(signer: str) -> list[dict]:
    return [rule("approve", [CERTIFICATES], "signers", signer)]


# name -> (rules, extra labels, aggregationRule label or None)
_BASE_ROLES: dict[str, tuple[list[dict], dict[str, str], str | None]] = {}


def _base(name: str, rules: list[dict], labels: dict[str, str] | None = None,
          aggregate: str | None = None) -> None:
    _BASE_ROLES[name] = (rules, labels or {}, aggregate)


_base("cluster-admin", [rule("*", ["*"], "*"), urls("*", "*")])
_base("system:discovery", [urls("get", "/livez /readyz /healthz /version /version/ /openapi "
                                "/openapi/* /api /api/* /apis /apis/*")])
# The splatted health checks name individual checks, which may say more about the cluster.
_base("system:monitoring", [urls("get", "/metrics /metrics/slis /livez /readyz /healthz "
                                 "/livez/* /readyz/* /healthz/*")])
_base("system:basic-user", [
    rule("create", [AUTHZ], "selfsubjectaccessreviews selfsubjectrulesreviews"),
    rule("create", [AUTHN], "selfsubjectreviews"),
])
_base("system:public-info-viewer", [urls("get", "/livez /readyz /healthz /version /version/")])
_base("admin", [], aggregate="admin")
_base("edit", [], {AGGREGATE_TO + "admin": "true"}, aggregate="edit")
_base("view", [], {AGGREGATE_TO + "edit": "true"}, aggregate="view")
_base("system:aggregate-to-admin", [
    rule("create", [AUTHZ], "localsubjectaccessreviews"),
    rule(READ_WRITE, [RBAC_GROUP], "roles rolebindings"),
], {AGGREGATE_TO + "admin": "true"})
_base("system:aggregate-to-edit", _edit_rules(), {AGGREGATE_TO + "edit": "true"})
_base("system:aggregate-to-view", _view_rules(), {AGGREGATE_TO + "view": "true"})
_base("system:heapster", [
    rule(READ, [CORE], "events pods nodes namespaces"),
    rule(READ, [EXTENSIONS], "deployments"),
])
_base("system:node", _node_rules())
_base("system:node-problem-detector", [
    rule("get", [CORE], "nodes"),
    rule("patch", [CORE], "nodes/status"),
    events_rule(),
])
_base("system:node-bootstrapper", [
    rule("create get list watch", [CERTIFICATES], "certificatesigningrequests"),
])
_base("system:auth-delegator", [
    rule("create", [AUTHN], "tokenreviews"),
    rule("create", [AUTHZ], "subjectaccessreviews"),
])
_base("system:kube-aggregator", [rule(READ, [CORE], "services endpoints")])
_base("system:kube-controller-manager", [
    events_rule(),
    rule("create", [COORDINATION], "leases"),
    rule("get update", [COORDINATION], "leases", "kube-controller-manager"),
    rule("create", [CORE], "secrets serviceaccounts"),
    rule("delete", [CORE], "secrets"),
    rule("get", [CORE], "namespaces secrets serviceaccounts configmaps"),
    rule("update", [CORE], "secrets serviceaccounts"),
    rule("create", [AUTHN], "tokenreviews"),
    rule("create", [AUTHZ], "subjectaccessreviews"),
    rule("list watch", ["*"], "*"),  # every shared informer
    rule("create", [CORE], "serviceaccounts/token"),
])
_base("system:kube-dns", [rule("list watch", [CORE], "endpoints services")])
_base("system:persistent-volume-provisioner", [
    rule("get list watch create delete", [CORE], "persistentvolumes"),
    rule("get list watch update", [CORE], "persistentvolumeclaims"),
    rule(READ, [STORAGE], "storageclasses"),
    rule("watch", [CORE], "events"),
    events_rule(),
])
_base("system:certificates.k8s.io:certificatesigningrequests:nodeclient", [
    rule("create", [CERTIFICATES], "certificatesigningrequests/nodeclient"),
])
_base("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", [
    rule("create", [CERTIFICATES], "certificatesigningrequests/selfnodeclient"),
])
_base("system:volume-scheduler", [
    rule(READ_UPDATE, [CORE], "persistentvolumes"),
    rule(READ, [STORAGE], "storageclasses"),
    rule(READ_UPDATE, [CORE], "persistentvolumeclaims"),
])
_base("system:certificates.k8s.io:legacy-unknown-approver",
      _approver("kubernetes.io/legacy-unknown"))
_base("system:certificates.k8s.io:kubelet-serving-approver",
      _approver("kubernetes.io/kubelet-serving"))
_base("system:certificates.k8s.io:kube-apiserver-client-approver",
      _approver("kubernetes.io/kube-apiserver-client"))
_base("system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
      _approver("kubernetes.io/kube-apiserver-client-kubelet"))
# The slash-ended paths serve clients generated from an older OpenAPI document.
_base("system:service-account-issuer-discovery", [
    urls("get", "/.well-known/openid-configuration /.well-known/openid-configuration/ "
         "/openid/v1/jwks /openid/v1/jwks/"),
])
_base("system:kubelet-api-admin", [
    rule(READ, [CORE], "nodes"),
    rule("proxy", [CORE], "nodes"),
    rule("*", [CORE], "nodes/proxy nodes/metrics nodes/stats nodes/log"),
    rule("*", [CORE], "nodes/pods nodes/healthz nodes/configz"),  # KubeletFineGrainedAuthz
])
_base("system:node-proxier", [
    rule("list watch", [CORE], "services endpoints"),
    rule(READ, [CORE], "nodes"),
    events_rule(),
    rule("list watch", [NETWORKING], "servicecidrs"),
    rule("list watch", [DISCOVERY], "endpointslices"),
])
_base("system:kube-scheduler", [
    events_rule(),
    rule("create", [COORDINATION], "leases"),
    rule("get update list watch", [COORDINATION], "leases", "kube-scheduler"),
    rule(READ_WRITE, [COORDINATION], "leasecandidates"),
    rule(READ, [CORE], "nodes"),
    rule("get list watch delete", [CORE], "pods"),
    rule("create", [CORE], "pods/binding bindings"),
    rule("patch update", [CORE], "pods/status"),
    rule(READ, [CORE], "services replicationcontrollers"),
    rule(READ, [APPS, EXTENSIONS], "replicasets"),
    rule(READ, [APPS], "statefulsets"),
    rule(READ, [POLICY], "poddisruptionbudgets"),
    rule(READ, [CORE], "persistentvolumeclaims persistentvolumes"),
    rule("create", [AUTHN], "tokenreviews"),
    rule("create", [AUTHZ], "subjectaccessreviews"),
    rule(READ, [STORAGE], "csinodes"),
    rule(READ, [STORAGE], "volumeattachments"),
    rule(READ, [CORE], "namespaces"),  # namespaceSelector in pod affinity
    rule(READ, [STORAGE], "csidrivers"),
    rule(READ, [STORAGE], "csistoragecapacities"),
])


# ---- the controllers' ClusterRoles (controller_policy.go) ----------------------------------

# controller (its ServiceAccount's name) -> rules of system:controller:<controller>
_CONTROLLERS: dict[str, list[dict]] = {
    "attachdetach-controller": [
        rule("list watch", [CORE], "persistentvolumes persistentvolumeclaims"),
        rule(READ, [CORE], "nodes"),
        rule("patch update", [CORE], "nodes/status"),
        rule("list watch", [CORE], "pods"),
        events_rule(),
        rule("get create delete list watch", [STORAGE], "volumeattachments"),
        rule(READ, [STORAGE], "csidrivers"),
        rule(READ, [STORAGE], "csinodes"),
    ],
    "clusterrole-aggregation-controller": [
        # it must be able to write any rule into a clusterrole, hence escalate
        rule("escalate get list watch update patch", [RBAC_GROUP], "clusterroles"),
    ],
    "cronjob-controller": [
        rule("get list watch update", [BATCH], "cronjobs"),
        rule("get list watch create update delete patch", [BATCH], "jobs"),
        rule("update", [BATCH], "cronjobs/status"),
        rule("update", [BATCH], "cronjobs/finalizers"),
        rule("list watch delete", [CORE], "pods"),
        events_rule(),
    ],
    "daemon-set-controller": [
        rule(READ, [EXTENSIONS, APPS], "daemonsets"),
        rule("update", [EXTENSIONS, APPS], "daemonsets/status"),
        rule("update", [EXTENSIONS, APPS], "daemonsets/finalizers"),
        rule("list watch", [CORE], "nodes"),
        rule("list watch create delete patch", [CORE], "pods"),
        rule("create", [CORE], "pods/binding"),
        rule("get list watch create delete update patch", [APPS], "controllerrevisions"),
        events_rule(),
    ],
    "deployment-controller": [
        rule("get list watch update", [EXTENSIONS, APPS], "deployments"),
        rule("update", [EXTENSIONS, APPS], "deployments/status"),
        rule("update", [EXTENSIONS, APPS], "deployments/finalizers"),
        rule("get list watch create update patch delete", [APPS, EXTENSIONS], "replicasets"),
        rule("get list watch update", [CORE], "pods"),
        events_rule(),
    ],
    "disruption-controller": [
        rule(READ, [EXTENSIONS, APPS], "deployments"),
        rule(READ, [APPS, EXTENSIONS], "replicasets"),
        rule(READ, [CORE], "replicationcontrollers"),
        rule(READ, [POLICY], "poddisruptionbudgets"),
        rule(READ, [APPS], "statefulsets"),
        rule("update", [POLICY], "poddisruptionbudgets/status"),
        rule("patch update", [CORE], "pods/status"),
        rule("get", ["*"], "*/scale"),
        events_rule(),
    ],
    "endpoint-controller": [
        rule(READ, [CORE], "services pods"),
        rule("get list watch create update delete", [CORE], "endpoints"),
        rule("create", [CORE], "endpoints/restricted"),
        events_rule(),
    ],
    "endpointslice-controller": [
        rule(READ, [CORE], "services pods nodes"),
        # to own a slice with blockOwnerDeletion it must be able to set the service's finalizers
        rule("update", [CORE], "services/finalizers"),
        rule("get list watch create update delete", [DISCOVERY], "endpointslices"),
        events_rule(),
    ],
    "endpointslicemirroring-controller": [
        rule(READ, [CORE], "services endpoints"),
        rule("update", [CORE], "services/finalizers"),
        rule("update", [CORE], "endpoints/finalizers"),
        rule("get list watch create update delete", [DISCOVERY], "endpointslices"),
        events_rule(),
    ],
    "expand-controller": [
        rule("get list watch update patch", [CORE], "persistentvolumes"),
        rule("update patch", [CORE], "persistentvolumeclaims/status"),
        rule(READ, [CORE], "persistentvolumeclaims"),
        events_rule(),
        rule("get", [CORE], "services"),  # the portworx volume plugin
    ],
    "ephemeral-volume-controller": [
        rule(READ, [CORE], "pods"),
        rule("update", [CORE], "pods/finalizers"),
        rule("get list watch create", [CORE], "persistentvolumeclaims"),
        events_rule(),
    ],
    "generic-garbage-collector": [
        rule("get list watch patch update delete", ["*"], "*"),
        events_rule(),
    ],
    "horizontal-pod-autoscaler": [
        rule(READ, [AUTOSCALING], "horizontalpodautoscalers"),
        rule("update", [AUTOSCALING], "horizontalpodautoscalers/status"),
        rule("get update", ["*"], "*/scale"),
        rule("list watch", [CORE], "pods"),
        rule("list watch", ["metrics.k8s.io"], "pods"),
        rule(READ, ["custom.metrics.k8s.io"], "*"),
        rule(READ, ["external.metrics.k8s.io"], "*"),
        events_rule(),
    ],
    "job-controller": [
        rule("get list watch update patch", [BATCH], "jobs"),
        rule("update", [BATCH], "jobs/status"),
        rule("update", [BATCH], "jobs/finalizers"),
        rule("list watch create delete patch", [CORE], "pods"),
        events_rule(),
    ],
    "namespace-controller": [
        rule("get list watch delete", [CORE], "namespaces"),
        rule("update", [CORE], "namespaces/finalize namespaces/status"),
        rule("get list watch delete deletecollection", ["*"], "*"),
    ],
    "node-controller": [
        rule("get list watch update delete patch", [CORE], "nodes"),
        rule("patch update", [CORE], "nodes/status"),
        rule("patch update", [CORE], "pods/status"),  # marks pods of lost nodes
        rule("list watch get delete", [CORE], "pods"),
        events_rule(),
    ],
    "persistent-volume-binder": [
        rule("get list watch update create delete", [CORE], "persistentvolumes"),
        rule("update", [CORE], "persistentvolumes/status"),
        rule("get list watch update", [CORE], "persistentvolumeclaims"),
        rule("update", [CORE], "persistentvolumeclaims/status"),
        rule("list watch get create delete", [CORE], "pods"),
        rule(READ, [STORAGE], "storageclasses"),
        rule("list watch", [CORE], "nodes"),
        events_rule(),
        rule("watch", [CORE], "events"),  # the recycler watches its pod's events
        rule("get", [CORE], "services"),  # the portworx volume plugin
    ],
    "pod-garbage-collector": [
        rule("list watch delete", [CORE], "pods"),
        rule(READ, [CORE], "nodes"),
        rule("patch", [CORE], "pods/status"),
    ],
    "replicaset-controller": [
        rule("get list watch update", [APPS, EXTENSIONS], "replicasets"),
        rule("update", [APPS, EXTENSIONS], "replicasets/status"),
        rule("update", [APPS, EXTENSIONS], "replicasets/finalizers"),
        rule("list watch patch create delete", [CORE], "pods"),
        events_rule(),
    ],
    "replication-controller": [
        rule("get list watch update", [CORE], "replicationcontrollers"),
        rule("update", [CORE], "replicationcontrollers/status"),
        rule("update", [CORE], "replicationcontrollers/finalizers"),
        rule("list watch patch create delete", [CORE], "pods"),
        events_rule(),
    ],
    "resourcequota-controller": [
        rule("list watch", ["*"], "*"),  # quota can count anything
        rule("update", [CORE], "resourcequotas/status"),
        events_rule(),
    ],
    "route-controller": [
        rule("list watch", [CORE], "nodes"),
        rule("patch", [CORE], "nodes/status"),
        events_rule(),
    ],
    "service-account-controller": [
        rule("create", [CORE], "serviceaccounts"),
        events_rule(),
    ],
    "service-controller": [
        rule(READ, [CORE], "services"),
        rule("patch update", [CORE], "services/status"),
        rule("list watch", [CORE], "nodes"),
        events_rule(),
    ],
    "service-cidrs-controller": [
        rule("get list watch patch update", [NETWORKING], "servicecidrs"),
        rule("patch update", [NETWORKING], "servicecidrs/finalizers"),
        rule("patch update", [NETWORKING], "servicecidrs/status"),
        rule(READ, [NETWORKING], "ipaddresses"),
        events_rule(),
    ],
    "statefulset-controller": [
        rule("list watch", [CORE], "pods"),
        rule(READ, [APPS], "statefulsets"),
        rule("update", [APPS], "statefulsets/status"),
        rule("update", [APPS], "statefulsets/finalizers"),
        rule("get create delete update patch", [CORE], "pods"),
        rule("get create delete update patch list watch", [APPS], "controllerrevisions"),
        rule("get create list watch", [CORE], "persistentvolumeclaims"),
        events_rule(),
        # StatefulSetAutoDeletePVC (GA)
        rule("update delete", [CORE], "persistentvolumeclaims"),
        rule("update", [CORE], "pods/finalizers"),
    ],
    "ttl-controller": [
        rule("update patch list watch", [CORE], "nodes"),
        events_rule(),
    ],
    "certificate-controller": [
        rule("get list watch delete", [CERTIFICATES], "certificatesigningrequests"),
        rule("update", [CERTIFICATES],
             "certificatesigningrequests/status certificatesigningrequests/approval"),
        rule("approve", [CERTIFICATES], "signers", "kubernetes.io/kube-apiserver-client-kubelet"),
        rule("sign", [CERTIFICATES], "signers", "kubernetes.io/legacy-unknown "
             "kubernetes.io/kube-apiserver-client kubernetes.io/kube-apiserver-client-kubelet "
             "kubernetes.io/kubelet-serving"),
        rule("create", [AUTHZ], "subjectaccessreviews"),
        events_rule(),
    ],
    "pvc-protection-controller": [
        rule("get list watch update", [CORE], "persistentvolumeclaims"),
        rule("list watch get", [CORE], "pods"),
        events_rule(),
    ],
    "pv-protection-controller": [
        rule("get list watch update", [CORE], "persistentvolumes"),
        events_rule(),
    ],
    "ttl-after-finished-controller": [
        rule("get list watch delete", [BATCH], "jobs"),
        events_rule(),
    ],
    "root-ca-cert-publisher": [
        rule("create update", [CORE], "configmaps"),
        events_rule(),
    ],
    "validatingadmissionpolicy-status-controller": [
        rule(READ, ["admissionregistration.k8s.io"], "validatingadmissionpolicies"),
        rule("get patch update", ["admissionregistration.k8s.io"],
             "validatingadmissionpolicies/status"),
        events_rule(),
    ],
    "legacy-service-account-token-cleaner": [
        rule("get", [CORE], "configmaps", "kube-apiserver-legacy-service-account-token-tracking"),
        rule("patch delete", [CORE], "secrets"),
    ],
    "selinux-warning-controller": [  # SELinuxChangePolicy (beta, on)
        events_rule(),
        rule(READ, [CORE], "persistentvolumes"),
        rule(READ, [CORE], "persistentvolumeclaims"),
        rule(READ, [CORE], "pods"),
        rule(READ, [STORAGE], "csidrivers"),
    ],
}


# ---- default bindings (policy.go, namespace_policy.go) -------------------------------------

def _group(name: str) -> dict:
    return {"kind": "Group", "apiGroup": RBAC_GROUP, "name": name}


def _user(name: str) -> dict:
    return {"kind": "User", "apiGroup": RBAC_GROUP, "name": name}


def _service_account(namespace: str, name: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


# binding name (= its ClusterRole's name) -> subjects
_CLUSTER_BINDINGS: dict[str, list[dict]] = {
    "cluster-admin": [_group("system:masters")],
    "system:monitoring": [_group("system:monitoring")],
    "system:discovery": [_group("system:authenticated")],
    "system:basic-user": [_group("system:authenticated")],
    "system:public-info-viewer": [_group("system:authenticated"),
                                  _group("system:unauthenticated")],
    "system:node-proxier": [_user("system:kube-proxy")],
    "system:kube-controller-manager": [_user("system:kube-controller-manager")],
    "system:kube-dns": [_service_account("kube-system", "kube-dns")],
    "system:kube-scheduler": [_user("system:kube-scheduler")],
    "system:volume-scheduler": [_user("system:kube-scheduler")],
    "system:node": [],  # kept empty: the Node authorizer grants nodes their access
    "system:service-account-issuer-discovery": [_group("system:serviceaccounts")],
}

# (namespace, name) -> rules
_NAMESPACED_ROLES: dict[tuple[str, str], list[dict]] = {
    # the one configmap of kube-system that delegated authentication needs to read
    ("kube-system", "extension-apiserver-authentication-reader"): [
        rule(READ, [CORE], "configmaps", "extension-apiserver-authentication"),
    ],
    ("kube-system", CONTROLLER_PREFIX + "bootstrap-signer"): [
        rule(READ, [CORE], "secrets"),
    ],
    # deprecated since 1.10, still created
    ("kube-system", CONTROLLER_PREFIX + "cloud-provider"): [
        rule("create get list watch", [CORE], "configmaps"),
    ],
    ("kube-system", CONTROLLER_PREFIX + "token-cleaner"): [
        rule("get list watch delete", [CORE], "secrets"),
        events_rule(),
    ],
    ("kube-system", "system::leader-locking-kube-controller-manager"): [
        rule("watch", [CORE], "configmaps"),
        rule("get update", [CORE], "configmaps", "kube-controller-manager"),
        rule("get watch list create update", [COORDINATION], "leases"),
    ],
    ("kube-system", "system::leader-locking-kube-scheduler"): [
        rule("watch", [CORE], "configmaps"),
        rule("get update", [CORE], "configmaps", "kube-scheduler"),
    ],
    ("kube-public", CONTROLLER_PREFIX + "bootstrap-signer"): [
        rule(READ, [CORE], "configmaps"),
        rule("update", [CORE], "configmaps", "cluster-info"),
        events_rule(),
    ],
}

# (namespace, binding name) -> (Role name, subjects)
_NAMESPACED_BINDINGS: dict[tuple[str, str], tuple[str, list[dict]]] = {
    ("kube-system", "system::extension-apiserver-authentication-reader"): (
        "extension-apiserver-authentication-reader",
        [_user("system:kube-controller-manager"), _user("system:kube-scheduler")]),
    ("kube-system", "system::leader-locking-kube-controller-manager"): (
        "system::leader-locking-kube-controller-manager",
        [_user("system:kube-controller-manager"),
         _service_account("kube-system", "kube-controller-manager"),
         _service_account("kube-system", "leader-election-controller")]),
    ("kube-system", "system::leader-locking-kube-scheduler"): (
        "system::leader-locking-kube-scheduler",
        [_user("system:kube-scheduler"), _service_account("kube-system", "kube-scheduler")]),
    ("kube-system", CONTROLLER_PREFIX + "bootstrap-signer"): (
        CONTROLLER_PREFIX + "bootstrap-signer",
        [_service_account("kube-system", "bootstrap-signer")]),
    ("kube-system", CONTROLLER_PREFIX + "cloud-provider"): (
        CONTROLLER_PREFIX + "cloud-provider",
        [_service_account("kube-system", "cloud-provider")]),
    ("kube-system", CONTROLLER_PREFIX + "token-cleaner"): (
        CONTROLLER_PREFIX + "token-cleaner",
        [_service_account("kube-system", "token-cleaner")]),
    ("kube-public", CONTROLLER_PREFIX + "bootstrap-signer"): (
        CONTROLLER_PREFIX + "bootstrap-signer",
        [_service_account("kube-system", "bootstrap-signer")]),
}


# ---- the objects ---------------------------------------------------------------------------

def _metadata(name: str, labels: dict[str, str] | None = None,
              namespace: str | None = None) -> dict:
    meta: dict = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {**BOOTSTRAP_LABELS, **(labels or {})}
    meta["annotations"] = dict(AUTOUPDATE_ANNOTATIONS)
    return meta


def _cluster_role(name: str, rules: list[dict], labels: dict[str, str] | None = None,
                  aggregate: str | None = None) -> dict:
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole",
            "metadata": _metadata(name, labels), "rules": copy.deepcopy(rules)}
    if aggregate is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {AGGREGATE_TO + aggregate: "true"}}]}
    return role


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict],
             namespace: str | None = None) -> dict:
    binding = {"apiVersion": API_VERSION, "kind": kind,
               "metadata": _metadata(name, namespace=namespace),
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role}}
    if subjects:  # omitempty: system:node's binding has no subjects at all
        binding["subjects"] = copy.deepcopy(subjects)
    return binding


def cluster_roles() -> list[dict]:
    """Every bootstrap ClusterRole: the base roles, then one per controller."""
    roles = [_cluster_role(name, rules, labels, aggregate)
             for name, (rules, labels, aggregate) in _BASE_ROLES.items()]
    roles += [_cluster_role(controller_role_name(c), rules) for c, rules in _CONTROLLERS.items()]
    return roles


def cluster_role_bindings() -> list[dict]:
    """Every bootstrap ClusterRoleBinding; each is named after the ClusterRole it binds."""
    bindings = [_binding("ClusterRoleBinding", name, "ClusterRole", name, subjects)
                for name, subjects in _CLUSTER_BINDINGS.items()]
    bindings += [_binding("ClusterRoleBinding", controller_role_name(c), "ClusterRole",
                          controller_role_name(c), [_service_account("kube-system", c)])
                 for c in _CONTROLLERS]
    return bindings


def namespaced_roles() -> list[dict]:
    """The bootstrap Roles of kube-system and kube-public."""
    return [{"apiVersion": API_VERSION, "kind": "Role",
             "metadata": _metadata(name, namespace=namespace), "rules": copy.deepcopy(rules)}
            for (namespace, name), rules in _NAMESPACED_ROLES.items()]


def namespaced_role_bindings() -> list[dict]:
    """The bootstrap RoleBindings of kube-system and kube-public, each to a Role there."""
    return [_binding("RoleBinding", name, "Role", role, subjects, namespace)
            for (namespace, name), (role, subjects) in _NAMESPACED_BINDINGS.items()]
