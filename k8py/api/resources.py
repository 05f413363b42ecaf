"""The resource registry: every kind the API server serves, with its names, scope and verbs.

A `Resource` is the unit the REST layer, discovery and storage all key on. Built-in kinds are
listed here once, as upstream's discovery for v1.32 shows them (plural, singular, short names,
categories, subresources). Custom resources will be added at run time from
CustomResourceDefinitions through `Registry.add`.

Storage keys follow Kubernetes' own shape: `/registry/<group>/<plural>/<namespace>/<name>`,
with `core` standing for the empty (legacy) group.
"""

from __future__ import annotations

import dataclasses

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    #: served from a CustomResourceDefinition (`from_crd`), with its openAPIV3Schema
    custom: bool = False
    schema: dict | None = dataclasses.field(default=None, compare=False, hash=False)
    #: the version objects are stored in when another version of the kind shares the
    #: storage ("" = this one); `k8py.api.conversion` converts between them
    storage_version: str = ""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def qualified(self) -> str:
        """How upstream names the resource in messages: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def converts(self) -> bool:
        """Whether objects are stored in another version than this one serves."""
        return bool(self.storage_version) and self.storage_version != self.version

    @property
    def storage_api_version(self) -> str:
        version = self.storage_version or self.version
        return f"{self.group}/{version}" if self.group else version

    def prefix(self, namespace: str | None = None) -> str:
        """The store prefix of all objects (namespace None) or of one namespace's objects."""
        base = f"/registry/{self.group or 'core'}/{self.plural}/"
        return base + f"{namespace}/" if namespace and self.namespaced else base

    def key(self, namespace: str | None, name: str) -> str:
        return self.prefix(namespace if self.namespaced else None) + name


def _r(group, version, kind, plural, namespaced=True, short=(), sub=(), cat=(), verbs=ALL_VERBS):
    return Resource(group, version, kind, plural, namespaced, tuple(short), tuple(sub), tuple(cat),
                    verbs)


_ALL = ("all",)

BUILTIN: tuple[Resource, ...] = (
    # core/v1
    _r("", "v1", "Namespace", "namespaces", False, ["ns"], ["status", "finalize"],
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "Pod", "pods", True, ["po"],
       ["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach",
        "portforward"], _ALL),
    _r("", "v1", "Service", "services", True, ["svc"], ["status"], _ALL,
       verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "Endpoints", "endpoints", True, ["ep"]),
    _r("", "v1", "ConfigMap", "configmaps", True, ["cm"]),
    _r("", "v1", "Secret", "secrets", True),
    _r("", "v1", "Node", "nodes", False, ["no"], ["status"]),
    _r("", "v1", "Event", "events", True, ["ev"]),
    _r("", "v1", "ServiceAccount", "serviceaccounts", True, ["sa"], ["token"]),
    _r("", "v1", "ReplicationController", "replicationcontrollers", True, ["rc"],
       ["status", "scale"], _ALL),
    _r("", "v1", "PersistentVolume", "persistentvolumes", False, ["pv"], ["status"]),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ["pvc"], ["status"]),
    _r("", "v1", "LimitRange", "limitranges", True, ["limits"]),
    _r("", "v1", "ResourceQuota", "resourcequotas", True, ["quota"], ["status"]),
    # apps/v1
    _r("apps", "v1", "Deployment", "deployments", True, ["deploy"], ["status", "scale"], _ALL),
    _r("apps", "v1", "ReplicaSet", "replicasets", True, ["rs"], ["status", "scale"], _ALL),
    _r("apps", "v1", "StatefulSet", "statefulsets", True, ["sts"], ["status", "scale"], _ALL),
    _r("apps", "v1", "DaemonSet", "daemonsets", True, ["ds"], ["status"], _ALL),
    _r("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    # autoscaling: v2 is the storage version and preferred, as upstream
    _r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
       ["hpa"], ["status"], _ALL),
    dataclasses.replace(
        _r("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
           ["hpa"], ["status"], _ALL), storage_version="v2"),
    # batch/v1
    _r("batch", "v1", "Job", "jobs", True, (), ["status"], _ALL),
    _r("batch", "v1", "CronJob", "cronjobs", True, ["cj"], ["status"], _ALL),
    # others
    _r("coordination.k8s.io", "v1", "Lease", "leases", True),
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    _r("events.k8s.io", "v1", "Event", "events", True, ["ev"]),
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", True, ["ing"], ["status"]),
    _r("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ["netpol"]),
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["pdb"], ["status"]),
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _r("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ["pc"]),
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ["sc"]),
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
       False, ["crd", "crds"], ["status"]),
    _r("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
       False, ["csr"], ["status", "approval"]),
    _r("apiregistration.k8s.io", "v1", "APIService", "apiservices", False, (), ["status"],
       ["api-extensions"]),
    # reviews: answered, never stored
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
       False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
       False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
       True, verbs=("create",)),
    _r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False,
       verbs=("create",)),
    _r("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False,
       verbs=("create",)),
)


def from_crd(crd: dict) -> list[Resource]:
    """The resources a CustomResourceDefinition serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    resources = []
    versions = spec.get("versions") or []
    stored = next((v.get("name") for v in versions if v.get("storage")), "")
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        resources.append(Resource(
            spec["group"], version["name"], names["kind"], names["plural"],
            spec.get("scope", "Namespaced") == "Namespaced",
            tuple(names.get("shortNames") or ()),
            tuple(s for s in ("status", "scale") if s in subresources),
            tuple(names.get("categories") or ()),
            custom=True,
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            storage_version=stored if len(versions) > 1 else "",
        ))
    return resources


class Registry:
    """Resources by (group, version, plural), and the groups in discovery order.
    `generation` grows with every change, for caches built from the registry."""

    def __init__(self, resources: tuple[Resource, ...] = BUILTIN):
        self._by_path: dict[tuple[str, str, str], Resource] = {}
        self._groups: dict[str, list[str]] = {}  # group -> versions, in order of appearance
        self._crds: dict[str, list[Resource]] = {}  # CRD name -> the resources it serves
        self.generation = 0
        for resource in resources:
            self.add(resource)

    def add(self, resource: Resource) -> None:
        self._by_path[(resource.group, resource.version, resource.plural)] = resource
        versions = self._groups.setdefault(resource.group, [])
        if resource.version not in versions:
            versions.append(resource.version)
        self.generation += 1

    def remove(self, resource: Resource) -> None:
        self._by_path.pop((resource.group, resource.version, resource.plural), None)
        if not self.in_group_version(resource.group, resource.version):
            versions = self._groups.get(resource.group, [])
            if resource.version in versions:
                versions.remove(resource.version)
            if not versions:
                self._groups.pop(resource.group, None)
        self.generation += 1

    def sync_crd(self, crd: dict | None, name: str) -> None:
        """Serve what CRD `name` defines now (None: it was deleted)."""
        for resource in self._crds.pop(name, []):
            self.remove(resource)
        if crd is not None:
            resources = from_crd(crd)
            for resource in resources:
                self.add(resource)
            self._crds[name] = resources

    def crd_resources(self, name: str) -> list[Resource]:
        return list(self._crds.get(name, ()))

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def groups(self) -> dict[str, list[str]]:
        return {g: list(v) for g, v in self._groups.items()}

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for (g, v, _), r in self._by_path.items() if g == group and v == version]

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._groups.get(group, ())


_BUILTIN_BY_PATH = {(r.group, r.version, r.plural): r for r in BUILTIN}


def builtin(api_version: str, plural: str) -> Resource:
    """A built-in resource by apiVersion and plural: `builtin("apps/v1", "deployments")`."""
    group, _, version = api_version.rpartition("/")
    return _BUILTIN_BY_PATH[(group, version, plural)]
