"""Table printing: upstream's durations, pod status text and column sets."""

from __future__ import annotations

import pytest

from k8py.api.tables import human_duration, table


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
    (600, "10m"), (3 * 3600, "3h"), (3 * 3600 + 300, "3h5m"), (9 * 3600, "9h"),
    (50 * 3600, "2d2h"), (48 * 3600, "2d"), (30 * 86400, "30d"), (800 * 86400, "2y70d"),
    (9 * 365 * 86400, "9y"),
])
def test_human_duration_matches_upstream(seconds, text):
    assert human_duration(seconds) == text


def pod(**status):
    return {"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}, {"name": "d"}]}, "status": status}


@pytest.mark.parametrize("status, ready, text", [
    ({"phase": "Pending"}, "0/2", "Pending"),
    ({"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": True, "state": {"running": {}}},
        {"name": "d", "ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "restartCount": 3}]}, "1/2", "CrashLoopBackOff"),
    ({"phase": "Succeeded", "containerStatuses": [
        {"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "d", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
     "0/2", "Completed"),
])
def test_pod_rows(status, ready, text):
    t = table("", "pods", [pod(**status)])
    assert [c["name"] for c in t["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    cells = t["rows"][0]["cells"]
    assert cells[1] == ready and cells[2] == text
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_unknown_kinds_get_name_and_age():
    t = table("example.com", "widgets", [{"metadata": {"name": "w"}}], include_object="None")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"] == [{"cells": ["w", "<unknown>"]}]


def cells(group: str, plural: str, obj: dict, wide: bool = True) -> dict:
    t = table(group, plural, [obj], include_object="None")
    names = [c["name"] for c in t["columnDefinitions"] if wide or not c["priority"]]
    return dict(zip(names, t["rows"][0]["cells"]))


META = {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("ports, endpoints, port_text, endpoint_text", [
    ([{"name": "http", "port": 8080, "protocol": "TCP"}],
     [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}], "8080", "10.0.0.1,10.0.0.2"),
    ([{"port": 1}, {"name": "named"}, {}, {"port": 4}],
     [{"addresses": [f"10.0.0.{i}"]} for i in range(5)],
     "1,named,* + 1 more...", "10.0.0.0,10.0.0.1,10.0.0.2 + 2 more..."),
    ([], [], "<unset>", "<unset>"),
])
def test_endpoint_slices(ports, endpoints, port_text, endpoint_text):
    row = cells("discovery.k8s.io", "endpointslices", {
        "metadata": META, "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
    assert list(row) == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert row["AddressType"] == "IPv4"
    assert row["Ports"] == port_text and row["Endpoints"] == endpoint_text


@pytest.mark.parametrize("subsets, text", [
    ([], "<none>"),
    ([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 80}]}],
     "10.0.0.1:80,[fd00::1]:80"),
    ([{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(3)],
       "ports": [{"port": 80}, {"port": 443}]}],
     "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 3 more..."),
    ([{"addresses": [{"ip": "10.0.0.9"}]}], "10.0.0.9"),  # headless, no ports
    ([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}], ""),
])
def test_endpoints(subsets, text):
    assert cells("", "endpoints", {"metadata": META, "subsets": subsets})["Endpoints"] == text


def test_pod_disruption_budgets():
    row = cells("policy", "poddisruptionbudgets", {
        "metadata": META, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 2}})
    assert list(row) == ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    assert (row["Min Available"], row["Max Unavailable"], row["Allowed Disruptions"]) == (
        "50%", "N/A", 2)
    row = cells("policy", "poddisruptionbudgets", {"metadata": META,
                                                   "spec": {"maxUnavailable": 0}})
    assert (row["Min Available"], row["Max Unavailable"], row["Allowed Disruptions"]) == (
        "N/A", "0", 0)


@pytest.mark.parametrize("owners, text", [
    ([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": True}],
     "daemonset.apps/ds"),
    ([{"apiVersion": "v1", "kind": "Pod", "name": "p", "controller": True}], "pod/p"),
    ([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds"}], "<none>"),
    ([], "<none>"),
])
def test_controller_revisions(owners, text):
    row = cells("apps", "controllerrevisions", {
        "metadata": {**META, "ownerReferences": owners}, "revision": 3})
    assert list(row) == ["Name", "Controller", "Revision", "Age"]
    assert row["Controller"] == text and row["Revision"] == 3


def test_cronjobs_wide_and_suspend_as_text():
    template = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "i:1"}, {"name": "b", "image": "i:2"}]}}}}
    row = cells("batch", "cronjobs", {"metadata": META, "spec": {
        "schedule": "*/5 * * * *", "suspend": False, "jobTemplate": template}})
    assert list(row) == ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule",
                         "Age", "Containers", "Images", "Selector"]
    assert row["Suspend"] == "False" and row["Timezone"] == "<none>"
    assert (row["Containers"], row["Images"], row["Selector"]) == ("a,b", "i:1,i:2", "<none>")
    row = cells("batch", "cronjobs", {"metadata": META, "spec": {"schedule": "@daily"}})
    assert row["Suspend"] == "<unset>"


@pytest.mark.parametrize("spec, status, meta, completions, text", [
    ({"completions": 3}, {"succeeded": 1}, {}, "1/3", "Running"),
    ({"parallelism": 4}, {"succeeded": 1}, {}, "1/1 of 4", "Running"),
    ({"parallelism": 1}, {}, {}, "0/1", "Running"),
    ({}, {"conditions": [{"type": "Suspended", "status": "True"},
                         {"type": "Complete", "status": "True"}]}, {}, "0/1", "Complete"),
    ({}, {"conditions": [{"type": "Suspended", "status": "True"}]},
     {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "0/1", "Terminating"),
    ({}, {"conditions": [{"type": "FailureTarget", "status": "True"}]}, {}, "0/1",
     "FailureTarget"),
    ({}, {"conditions": [{"type": "Failed", "status": "True"}]}, {}, "0/1", "Failed"),
])
def test_jobs(spec, status, meta, completions, text):
    row = cells("batch", "jobs", {"metadata": {**META, **meta}, "spec": spec, "status": status})
    assert (row["Completions"], row["Status"]) == (completions, text)


def test_nodes_wide():
    node = {"metadata": {**META, "labels": {"node-role.kubernetes.io/control-plane": "",
                                            "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "n"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Linux",
                                    "kernelVersion": "6.1", "containerRuntimeVersion": "c://1"}}}
    row = cells("", "nodes", node)
    assert row == {"Name": "x", "Status": "Ready,SchedulingDisabled",
                   "Roles": "control-plane,worker", "Age": row["Age"], "Version": "v1.32.0",
                   "Internal-IP": "10.0.0.1", "External-IP": "<none>", "OS-Image": "Linux",
                   "Kernel-Version": "6.1", "Container-Runtime": "c://1"}


def test_workload_and_account_columns():
    assert list(cells("apps", "daemonsets", {"metadata": META})) == [
        "Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age",
        "Containers", "Images", "Selector"]
    assert list(cells("apps", "statefulsets", {"metadata": META})) == [
        "Name", "Ready", "Age", "Containers", "Images"]
    assert cells("", "serviceaccounts", {"metadata": META, "secrets": [{"name": "s"}]}) == {
        "Name": "x", "Secrets": 1, "Age": cells("", "serviceaccounts", {"metadata": META})["Age"]}
    assert list(cells("coordination.k8s.io", "leases", {"metadata": META})) == [
        "Name", "Holder", "Age"]


def test_kinds_kubectl_create_makes():
    ingress = {"metadata": META, "spec": {
        "ingressClassName": "nginx", "tls": [{"hosts": ["a"]}],
        "rules": [{"host": "a"}, {"http": {}}, {"host": "b"}, {"host": "c"}, {"host": "d"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb"}]}}}
    assert cells("networking.k8s.io", "ingresses", ingress) == {
        "Name": "x", "Class": "nginx", "Hosts": "a,b,c + 2 more...", "Address": "1.2.3.4,lb",
        "Ports": "80, 443", "Age": cells("networking.k8s.io", "ingresses", ingress)["Age"]}
    for spec, shown in (({"podSelector": {}}, "<none>"),
                        ({"podSelector": {"matchLabels": {"app": "web"}}}, "app=web")):
        row = cells("networking.k8s.io", "networkpolicies", {"metadata": META, "spec": spec})
        assert (list(row), row["Pod-Selector"]) == (["Name", "Pod-Selector", "Age"], shown)
    binding = {"metadata": META, "roleRef": {"kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "User", "name": "u1"}, {"kind": "User", "name": "u2"},
                            {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]}
    row = cells("rbac.authorization.k8s.io", "clusterrolebindings", binding)
    assert (row["Role"], row["Users"], row["Groups"], row["ServiceAccounts"]) == (
        "ClusterRole/view", "u1, u2", "", "ns/sa")
    assert cells("rbac.authorization.k8s.io", "roles", {"metadata": META}) == {
        "Name": "x", "Created At": "2026-01-01T00:00:00Z"}
    quota = {"metadata": META, "status": {
        "hard": {"pods": "2", "cpu": "1", "limits.memory": "1G"}, "used": {"cpu": "500m"}}}
    row = cells("", "resourcequotas", quota)
    assert list(row) == ["Name", "Age", "Request", "Limit"]
    assert (row["Request"], row["Limit"]) == ("cpu: 500m/1, pods: 0/2", "limits.memory: 0/1G")
    row = cells("scheduling.k8s.io", "priorityclasses", {
        "metadata": META, "value": 10, "preemptionPolicy": "Never"})
    assert (row["Value"], row["Global-Default"], row["PreemptionPolicy"]) == (10, False, "Never")
