"""The RBAC bootstrap policy data: every object well formed (labels, annotations, sorted rule
lists, unique names, bindings naming roles that exist) and a handful of facts checked against
upstream's bootstrappolicy testdata, written out here as upstream serves them."""

from __future__ import annotations

import pytest

from k8py.server.apiserver import bootstrappolicy as bp

RBAC = "rbac.authorization.k8s.io"


def _by_name(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects}


def _aggregated(name: str, roles: dict[str, dict]) -> list[dict]:
    """The rules upstream's aggregation controller gives an aggregated role: those of every
    role its selectors match (aggregated roles contributing their own aggregation)."""
    role = roles[name]
    if "aggregationRule" not in role:
        return role["rules"]
    out: list[dict] = []
    for selector in role["aggregationRule"]["clusterRoleSelectors"]:
        for other in sorted(roles):
            labels = roles[other]["metadata"]["labels"]
            if other != name and all(labels.get(k) == v
                                     for k, v in selector["matchLabels"].items()):
                out += [r for r in _aggregated(other, roles) if r not in out]
    return out


def _allows(rules: list[dict], verb: str, group: str, resource: str) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values
    return any(has(r.get("verbs", []), verb) and has(r.get("apiGroups", []), group)
               and has(r.get("resources", []), resource) and not r.get("resourceNames")
               for r in rules)


def _all_objects() -> list[dict]:
    return (bp.cluster_roles() + bp.cluster_role_bindings() + bp.namespaced_roles()
            + bp.namespaced_role_bindings())


def test_every_object_carries_upstreams_metadata():
    for obj in _all_objects():
        assert obj["apiVersion"] == "rbac.authorization.k8s.io/v1"
        meta = obj["metadata"]
        assert meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults", meta["name"]
        assert meta["annotations"] == {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        assert ("namespace" in meta) == (obj["kind"] in ("Role", "RoleBinding"))
        if "namespace" in meta:
            assert meta["namespace"] in ("kube-system", "kube-public")


def test_names_are_unique_per_kind_and_namespace():
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in _all_objects()]
    assert len(keys) == len(set(keys))


def test_every_rule_is_well_formed_and_sorted():
    for role in bp.cluster_roles() + bp.namespaced_roles():
        for r in role["rules"]:
            assert r["verbs"], role["metadata"]["name"]
            assert ("nonResourceURLs" in r) != ("resources" in r), r
            if "resources" in r:
                assert r["resources"] and "apiGroups" in r, r
            for field in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
                if field in r:
                    assert r[field] and r[field] == sorted(r[field]), (field, r)
            assert set(r) <= {"verbs", "apiGroups", "resources", "resourceNames",
                              "nonResourceURLs"}
        if role["kind"] == "ClusterRole" and "aggregationRule" not in role:
            assert role["rules"], role["metadata"]["name"]


def test_bindings_name_roles_that_exist_and_well_formed_subjects():
    cluster = _by_name(bp.cluster_roles())
    namespaced = {(r["metadata"]["namespace"], r["metadata"]["name"])
                  for r in bp.namespaced_roles()}
    for binding in bp.cluster_role_bindings():
        assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole",
                                      "name": binding["roleRef"]["name"]}
        assert binding["roleRef"]["name"] in cluster
    for binding in bp.namespaced_role_bindings():
        assert binding["roleRef"]["kind"] == "Role"
        assert (binding["metadata"]["namespace"], binding["roleRef"]["name"]) in namespaced
    for binding in bp.cluster_role_bindings() + bp.namespaced_role_bindings():
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                assert set(subject) == {"kind", "name", "namespace"}
            else:
                assert subject["kind"] in ("User", "Group")
                assert set(subject) == {"kind", "apiGroup", "name"}
                assert subject["apiGroup"] == RBAC


def test_every_controller_role_is_bound_to_its_service_account():
    bindings = _by_name(bp.cluster_role_bindings())
    controllers = [n for n in _by_name(bp.cluster_roles()) if n.startswith("system:controller:")]
    assert len(controllers) >= 30
    for name in controllers:
        controller = name.removeprefix("system:controller:")
        assert bp.controller_role_name(controller) == name
        assert bindings[name]["subjects"] == [
            {"kind": "ServiceAccount", "name": controller, "namespace": "kube-system"}]


@pytest.mark.parametrize("name", [
    "cluster-admin", "system:discovery", "system:basic-user", "system:public-info-viewer",
    "admin", "edit", "view", "system:aggregate-to-admin", "system:aggregate-to-edit",
    "system:aggregate-to-view", "system:heapster", "system:node", "system:node-problem-detector",
    "system:kubelet-api-admin", "system:node-bootstrapper", "system:auth-delegator",
    "system:kube-aggregator", "system:kube-controller-manager", "system:kube-dns",
    "system:persistent-volume-provisioner",
    "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
    "system:certificates.k8s.io:kube-apiserver-client-approver",
    "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
    "system:certificates.k8s.io:kubelet-serving-approver",
    "system:certificates.k8s.io:legacy-unknown-approver", "system:volume-scheduler",
    "system:kube-scheduler", "system:node-proxier", "system:monitoring",
    "system:service-account-issuer-discovery",
    "system:controller:attachdetach-controller", "system:controller:generic-garbage-collector",
    "system:controller:namespace-controller", "system:controller:service-account-controller",
    "system:controller:legacy-service-account-token-cleaner",
    "system:controller:validatingadmissionpolicy-status-controller",
    "system:controller:service-cidrs-controller", "system:controller:root-ca-cert-publisher",
])
def test_upstreams_cluster_role_exists(name):
    assert name in _by_name(bp.cluster_roles())


def test_feature_gated_roles_off_by_default_are_left_out():
    names = _by_name(bp.cluster_roles())
    for name in ("system:controller:resource-claim-controller",
                 "system:cluster-trust-bundle-discovery",
                 "system:controller:storage-version-garbage-collector",
                 "system:controller:volumeattributesclass-protection-controller"):
        assert name not in names


def test_cluster_admin_can_do_everything():
    assert _by_name(bp.cluster_roles())["cluster-admin"]["rules"] == [
        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
        {"verbs": ["*"], "nonResourceURLs": ["*"]},
    ]


def test_admin_edit_view_aggregate_through_labels():
    roles = _by_name(bp.cluster_roles())
    for name in ("admin", "edit", "view"):
        assert roles[name]["rules"] == []
        assert roles[name]["aggregationRule"] == {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{name}": "true"}}]}
    assert roles["edit"]["metadata"]["labels"][
        "rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert roles["view"]["metadata"]["labels"][
        "rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert roles["system:aggregate-to-view"]["metadata"]["labels"][
        "rbac.authorization.k8s.io/aggregate-to-view"] == "true"


def test_view_does_not_read_secrets_but_edit_does_and_execs():
    roles = _by_name(bp.cluster_roles())
    view, edit, admin = (_aggregated(n, roles) for n in ("view", "edit", "admin"))
    assert _allows(view, "list", "", "pods") and _allows(view, "get", "apps", "deployments")
    assert not _allows(view, "get", "", "secrets")
    assert not _allows(view, "create", "", "pods/exec")
    assert not _allows(view, "get", "", "pods/exec")
    assert _allows(edit, "get", "", "secrets") and _allows(edit, "create", "", "pods/exec")
    assert _allows(edit, "create", "", "serviceaccounts/token")
    assert not _allows(edit, "create", RBAC, "rolebindings")
    assert _allows(admin, "create", RBAC, "rolebindings")
    assert _allows(admin, "create", "", "pods/exec")
    assert not _allows(admin, "update", "", "resourcequotas")


def test_system_node_rules_are_upstreams():
    assert _by_name(bp.cluster_roles())["system:node"]["rules"] == [
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
         "resources": ["tokenreviews"]},
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["localsubjectaccessreviews", "subjectaccessreviews"]},
        {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["services"]},
        {"verbs": ["create", "get", "list", "watch"], "apiGroups": [""], "resources": ["nodes"]},
        {"verbs": ["patch", "update"], "apiGroups": [""], "resources": ["nodes/status"]},
        {"verbs": ["patch", "update"], "apiGroups": [""], "resources": ["nodes"]},
        {"verbs": ["create", "patch", "update"], "apiGroups": [""], "resources": ["events"]},
        {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["create", "delete"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["patch", "update"], "apiGroups": [""], "resources": ["pods/status"]},
        {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/eviction"]},
        {"verbs": ["get", "list", "watch"], "apiGroups": [""],
         "resources": ["configmaps", "secrets"]},
        {"verbs": ["get"], "apiGroups": [""],
         "resources": ["persistentvolumeclaims", "persistentvolumes"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["endpoints"]},
        {"verbs": ["create", "get", "list", "watch"], "apiGroups": ["certificates.k8s.io"],
         "resources": ["certificatesigningrequests"]},
        {"verbs": ["create", "delete", "get", "patch", "update"],
         "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]},
        {"verbs": ["get"], "apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"]},
        {"verbs": ["create"], "apiGroups": [""], "resources": ["serviceaccounts/token"]},
        {"verbs": ["get", "patch", "update"], "apiGroups": [""],
         "resources": ["persistentvolumeclaims/status"]},
        {"verbs": ["get", "list", "watch"], "apiGroups": ["storage.k8s.io"],
         "resources": ["csidrivers"]},
        {"verbs": ["create", "delete", "get", "patch", "update"],
         "apiGroups": ["storage.k8s.io"], "resources": ["csinodes"]},
        {"verbs": ["get", "list", "watch"], "apiGroups": ["node.k8s.io"],
         "resources": ["runtimeclasses"]},
    ]


def test_system_kube_scheduler_rules_are_upstreams():
    read = ["get", "list", "watch"]
    assert _by_name(bp.cluster_roles())["system:kube-scheduler"]["rules"] == [
        {"verbs": ["create", "patch", "update"], "apiGroups": ["", "events.k8s.io"],
         "resources": ["events"]},
        {"verbs": ["create"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]},
        {"verbs": ["get", "list", "update", "watch"], "apiGroups": ["coordination.k8s.io"],
         "resources": ["leases"], "resourceNames": ["kube-scheduler"]},
        {"verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                   "watch"], "apiGroups": ["coordination.k8s.io"],
         "resources": ["leasecandidates"]},
        {"verbs": read, "apiGroups": [""], "resources": ["nodes"]},
        {"verbs": ["delete", "get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["create"], "apiGroups": [""], "resources": ["bindings", "pods/binding"]},
        {"verbs": ["patch", "update"], "apiGroups": [""], "resources": ["pods/status"]},
        {"verbs": read, "apiGroups": [""], "resources": ["replicationcontrollers", "services"]},
        {"verbs": read, "apiGroups": ["apps", "extensions"], "resources": ["replicasets"]},
        {"verbs": read, "apiGroups": ["apps"], "resources": ["statefulsets"]},
        {"verbs": read, "apiGroups": ["policy"], "resources": ["poddisruptionbudgets"]},
        {"verbs": read, "apiGroups": [""],
         "resources": ["persistentvolumeclaims", "persistentvolumes"]},
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
         "resources": ["tokenreviews"]},
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["subjectaccessreviews"]},
        {"verbs": read, "apiGroups": ["storage.k8s.io"], "resources": ["csinodes"]},
        {"verbs": read, "apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"]},
        {"verbs": read, "apiGroups": [""], "resources": ["namespaces"]},
        {"verbs": read, "apiGroups": ["storage.k8s.io"], "resources": ["csidrivers"]},
        {"verbs": read, "apiGroups": ["storage.k8s.io"], "resources": ["csistoragecapacities"]},
    ]


def test_default_cluster_role_bindings():
    bindings = _by_name(bp.cluster_role_bindings())

    def subjects(name: str) -> list[tuple[str, str]]:
        return [(s["kind"], s["name"]) for s in bindings[name].get("subjects", [])]

    assert subjects("cluster-admin") == [("Group", "system:masters")]
    assert subjects("system:discovery") == [("Group", "system:authenticated")]
    assert subjects("system:basic-user") == [("Group", "system:authenticated")]
    assert subjects("system:public-info-viewer") == [("Group", "system:authenticated"),
                                                     ("Group", "system:unauthenticated")]
    assert subjects("system:kube-scheduler") == [("User", "system:kube-scheduler")]
    assert subjects("system:volume-scheduler") == [("User", "system:kube-scheduler")]
    assert subjects("system:node-proxier") == [("User", "system:kube-proxy")]
    assert subjects("system:monitoring") == [("Group", "system:monitoring")]
    assert subjects("system:service-account-issuer-discovery") == [
        ("Group", "system:serviceaccounts")]
    assert bindings["system:kube-dns"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"}]
    assert "subjects" not in bindings["system:node"]  # nodes get their access elsewhere


def test_namespaced_roles_and_bindings():
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r
             for r in bp.namespaced_roles()}
    assert roles[("kube-system", "extension-apiserver-authentication-reader")]["rules"] == [
        {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["configmaps"],
         "resourceNames": ["extension-apiserver-authentication"]}]
    assert ("kube-public", "system:controller:bootstrap-signer") in roles
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b
                for b in bp.namespaced_role_bindings()}
    reader = bindings[("kube-system", "system::extension-apiserver-authentication-reader")]
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    assert [s["name"] for s in reader["subjects"]] == ["system:kube-controller-manager",
                                                       "system:kube-scheduler"]
    public = bindings[("kube-public", "system:controller:bootstrap-signer")]
    assert public["subjects"] == [
        {"kind": "ServiceAccount", "name": "bootstrap-signer", "namespace": "kube-system"}]


def test_each_call_returns_fresh_objects():
    first = bp.cluster_roles()
    first[0]["rules"].clear()
    first[0]["metadata"]["labels"]["x"] = "y"
    assert bp.cluster_roles()[0]["rules"]
    assert "x" not in bp.cluster_roles()[0]["metadata"]["labels"]
    bp.namespaced_role_bindings()[0]["subjects"].clear()
    assert bp.namespaced_role_bindings()[0]["subjects"]
