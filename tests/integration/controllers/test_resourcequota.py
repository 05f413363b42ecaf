"""ResourceQuota and LimitRange end to end on a control plane: the quota controller fills in
status, admission charges and refuses with upstream's messages (403 through kubectl and the
official Python client), deletions give usage back, parallel creates cannot overrun a
quota, dry runs are not charged; LimitRange defaults and bounds on pods and claims."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client as k8s, config

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

QUOTAS = builtin("v1", "resourcequotas")
LIMITS = builtin("v1", "limitranges")
PODS = builtin("v1", "pods")
SERVICES = builtin("v1", "services")
CONFIGMAPS = builtin("v1", "configmaps")
CLAIMS = builtin("v1", "persistentvolumeclaims")
NAMESPACES = builtin("v1", "namespaces")


def pod(name: str, namespace: str, **resources) -> dict:
    container = {"name": "c", "image": "busybox"}
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [container]}}


def quota(name: str, namespace: str, hard: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hard": hard, **spec}}


async def namespace(client, name: str) -> str:
    """A new namespace, once the root CA publisher has put its configmap there."""
    await client.create(NAMESPACES, {"metadata": {"name": name}})

    async def published():
        return (await client.list(CONFIGMAPS, name))["items"]
    await eventually(published, 5, what="kube-root-ca.crt published")
    return name


async def used(client, name: str, namespace: str, wanted: dict | None = None,
               **more) -> dict | None:
    """The quota's status.used once it has every wanted value."""
    status = (await client.get(QUOTAS, name, namespace)).get("status") or {}
    values = status.get("used")
    if values is None:
        return None
    wanted = {**(wanted or {}), **more}
    return values if all(values.get(k) == v for k, v in wanted.items()) else None


async def test_usage_is_computed_charged_and_given_back(cluster):
    client = cluster.client
    ns = await namespace(client, "q1")
    await client.create(QUOTAS, quota("compute", ns, {
        "pods": "2", "requests.cpu": "1", "requests.memory": "1Gi", "limits.memory": "2Gi",
        "configmaps": "5"}))
    status = await eventually(lambda: used(client, "compute", ns, pods="0"), 5,
                              what="usage computed")
    assert status["requests.cpu"] == "0" and status["limits.memory"] == "0"
    assert status["configmaps"] == "1"  # kube-root-ca.crt
    hard = (await client.get(QUOTAS, "compute", ns))["status"]["hard"]
    assert hard == {"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi",
                    "limits.memory": "2Gi", "configmaps": "5"}

    resources = {"requests": {"cpu": "300m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    await client.create(PODS, pod("a", ns, **resources))
    status = await used(client, "compute", ns, pods="1")
    assert status["requests.cpu"] == "300m" and status["requests.memory"] == "512Mi"
    await client.create(PODS, pod("b", ns, **resources))
    status = await used(client, "compute", ns, pods="2")
    assert status["requests.cpu"] == "600m" and status["requests.memory"] == "1Gi"
    assert status["limits.memory"] == "2Gi"

    with pytest.raises(errors.Forbidden) as refused:
        await client.create(PODS, pod("c", ns, **resources))
    assert refused.value.message == (
        'pods "c" is forbidden: exceeded quota: compute, requested: limits.memory=1Gi,pods=1,'
        'requests.memory=512Mi, used: limits.memory=2Gi,pods=2,requests.memory=1Gi, '
        'limited: limits.memory=2Gi,pods=2,requests.memory=1Gi')

    # a pod that does not state what the quota limits
    with pytest.raises(errors.Forbidden) as refused:
        await client.create(PODS, pod("d", ns))
    assert refused.value.message == (
        'pods "d" is forbidden: failed quota: compute: must specify limits.memory for: c; '
        'requests.cpu for: c; requests.memory for: c')

    await client.delete(PODS, "a", ns)
    status = await eventually(lambda: used(client, "compute", ns, pods="1"), 5,
                              what="usage given back")
    assert status["requests.cpu"] == "300m"
    await client.create(PODS, pod("c", ns, **resources))
    assert await used(client, "compute", ns, pods="2")


async def test_parallel_creates_cannot_overrun_a_quota(cluster):
    client = cluster.client
    ns = await namespace(client, "q2")
    await client.create(QUOTAS, quota("three", ns, {"pods": "3"}))
    await eventually(lambda: used(client, "three", ns, pods="0"), 5, what="usage computed")
    results = await asyncio.gather(*(client.create(PODS, pod(f"p{i}", ns)) for i in range(12)),
                                   return_exceptions=True)
    created = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, errors.Forbidden)]
    assert len(created) == 3 and len(refused) == 9, results
    assert all("exceeded quota: three, requested: pods=1, used: pods=3, limited: pods=3"
               in r.message for r in refused)
    assert await used(client, "three", ns, pods="3")


async def test_dry_run_is_checked_but_not_charged(cluster):
    ns = await namespace(cluster.client, "q3")
    await cluster.client.create(QUOTAS, quota("one", ns, {"count/configmaps": "1",
                                                          "services": "1"}))
    await eventually(lambda: used(cluster.client, "one", ns, {"count/configmaps": "1"}), 5,
                     what="root CA configmap counted")
    await cluster.client.create(QUOTAS, quota("svc", ns, {"services.nodeports": "3"}))
    await eventually(lambda: used(cluster.client, "svc", ns, {"services.nodeports": "0"}), 5,
                     what="usage computed")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    proc = await cluster.akubectl("create", "-n", ns, "--dry-run=server", "-f", "-",
                                  input=json.dumps(service))
    assert "created (server dry run)" in proc.stdout
    assert await used(cluster.client, "svc", ns, {"services.nodeports": "0"})
    assert await used(cluster.client, "one", ns, services="0")
    proc = await cluster.akubectl("create", "-n", ns, "-f", "-", input=json.dumps(service))
    assert await used(cluster.client, "svc", ns, {"services.nodeports": "1"})
    two_ports = {**service, "metadata": {"name": "web2"},
                 "spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80},
                                                        {"name": "b", "port": 81}]}}
    proc = await cluster.akubectl("create", "-n", ns, "-f", "-", input=json.dumps(two_ports),
                                  check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": services "web2" is '
        'forbidden: exceeded quota: one, requested: services=1, used: services=1, '
        'limited: services=1')
    proc = await cluster.akubectl("create", "configmap", "extra", "-n", ns, check=False)
    assert proc.stderr.strip() == (
        'error: failed to create configmap: configmaps "extra" is forbidden: exceeded quota: '
        'one, requested: count/configmaps=1, used: count/configmaps=1, '
        'limited: count/configmaps=1')


async def test_kubectl_get_and_describe_quota(cluster):
    ns = await namespace(cluster.client, "q4")
    await cluster.client.create(QUOTAS, quota("mixed", ns, {
        "requests.cpu": "1000m", "limits.cpu": "2", "pods": "10"}))
    await eventually(lambda: used(cluster.client, "mixed", ns, pods="0"), 5,
                     what="usage computed")
    await cluster.client.create(PODS, pod("a", ns, requests={"cpu": "250m"},
                                          limits={"cpu": "500m"}))
    table = (await cluster.akubectl("get", "quota", "-n", ns)).stdout.splitlines()
    assert table[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert table[1].split()[0] == "mixed"
    assert "pods: 1/10, requests.cpu: 250m/1" in table[1]
    assert table[1].rstrip().endswith("limits.cpu: 500m/2")
    described = (await cluster.akubectl("describe", "quota", "mixed", "-n", ns)).stdout
    rows = [line.split() for line in described.splitlines()[2:] if line.strip()]
    assert rows == [["Resource", "Used", "Hard"], ["--------", "----", "----"],
                    ["limits.cpu", "500m", "2"], ["pods", "1", "10"],
                    ["requests.cpu", "250m", "1"]]


async def test_limit_range_defaults_and_bounds(cluster):
    client = cluster.client
    ns = await namespace(client, "lr")
    await client.create(LIMITS, {"apiVersion": "v1", "kind": "LimitRange",
                                 "metadata": {"name": "limits", "namespace": ns},
                                 "spec": {"limits": [
                                     {"type": "Container", "min": {"cpu": "100m"},
                                      "max": {"cpu": "1", "memory": "1Gi"},
                                      "defaultRequest": {"cpu": "200m"}},
                                     {"type": "PersistentVolumeClaim",
                                      "max": {"storage": "2Gi"}}]}})
    stored = await client.get(LIMITS, "limits", ns)
    container = stored["spec"]["limits"][0]
    assert container["default"] == {"cpu": "1", "memory": "1Gi"}
    assert container["defaultRequest"] == {"cpu": "200m", "memory": "1Gi"}

    created = await client.create(PODS, pod("defaulted", ns))
    resources = created["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "1", "memory": "1Gi"},
                         "requests": {"cpu": "200m", "memory": "1Gi"}}
    assert created["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container c; "
        "cpu, memory limit for container c")

    with pytest.raises(errors.Forbidden) as refused:
        await client.create(PODS, pod("small", ns, requests={"cpu": "50m"},
                                      limits={"cpu": "50m", "memory": "2Gi"}))
    assert refused.value.message == (
        'pods "small" is forbidden: [minimum cpu usage per Container is 100m, but request is '
        '50m, maximum memory usage per Container is 1Gi, but limit is 2Gi]')
    assert refused.value.code == 403

    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "big", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "5Gi"}}}}
    proc = await cluster.akubectl("create", "-f", "-", input=json.dumps(claim), check=False)
    assert proc.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": persistentvolumeclaims '
        '"big" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but '
        'request is 5Gi')
    table = (await cluster.akubectl("get", "limits", "-n", ns)).stdout.splitlines()
    assert table[0].split() == ["NAME", "CREATED", "AT"]


async def test_official_client_sees_403(cluster, tmp_path):
    ns = await namespace(cluster.client, "q5")
    await cluster.client.create(QUOTAS, quota("one", ns, {"pods": "1"}))
    await eventually(lambda: used(cluster.client, "one", ns, pods="0"), 5,
                     what="usage computed")
    api = k8s.CoreV1Api(config.new_client_from_config(config_file=cluster.kubeconfig))
    body = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="first"), spec=k8s.V1PodSpec(
        containers=[k8s.V1Container(name="c", image="busybox")]))
    await asyncio.to_thread(api.create_namespaced_pod, ns, body)
    body.metadata.name = "second"
    with pytest.raises(k8s.ApiException) as refused:
        await asyncio.to_thread(api.create_namespaced_pod, ns, body)
    assert refused.value.status == 403
    status = json.loads(refused.value.body)
    assert status["reason"] == "Forbidden" and status["details"] == {"name": "second",
                                                                     "kind": "pods"}
    assert status["message"] == ('pods "second" is forbidden: exceeded quota: one, '
                                 'requested: pods=1, used: pods=1, limited: pods=1')


async def test_finished_pods_give_usage_back(cluster):
    client = cluster.client
    ns = await namespace(client, "q6")
    await client.create(QUOTAS, quota("one", ns, {"pods": "1", "count/pods": "5"}))
    await eventually(lambda: used(client, "one", ns, pods="0"), 5, what="usage computed")
    finishing = pod("finishing", ns)
    finishing["metadata"]["annotations"] = {"k8py.io/simulate-exit-code": "0"}
    await client.create(PODS, finishing)
    assert await used(client, "one", ns, {"pods": "1", "count/pods": "1"})
    # a finished pod is no longer charged for `pods`, but still counts in count/pods
    await eventually(lambda: used(client, "one", ns, {"pods": "0", "count/pods": "1"}), 10,
                     what="the finished pod given back")
    await client.create(PODS, pod("next", ns))
    assert await used(client, "one", ns, {"pods": "1", "count/pods": "2"})


async def test_scoped_quotas_charge_only_what_they_select(cluster):
    client = cluster.client
    ns = await namespace(client, "q7")
    await client.create(QUOTAS, quota("best-effort", ns, {"pods": "1"}, scopes=["BestEffort"]))
    await client.create(QUOTAS, quota("guaranteed", ns, {"pods": "5", "requests.cpu": "1"},
                                      scopes=["NotBestEffort"]))
    for name in ("best-effort", "guaranteed"):
        await eventually(lambda: used(client, name, ns, pods="0"), 5, what="usage computed")
    await client.create(PODS, pod("plain", ns))
    assert await used(client, "best-effort", ns, pods="1")
    assert await used(client, "guaranteed", ns, {"pods": "0", "requests.cpu": "0"})
    with pytest.raises(errors.Forbidden) as refused:
        await client.create(PODS, pod("plain2", ns))
    assert "exceeded quota: best-effort, requested: pods=1" in refused.value.message
    await client.create(PODS, pod("sized", ns, requests={"cpu": "500m"}))
    assert await used(client, "guaranteed", ns, {"pods": "1", "requests.cpu": "500m"})
    assert await used(client, "best-effort", ns, pods="1")


async def test_invalid_quotas_are_refused(cluster):
    bad = quota("bad", "default", {"pods": "-1", "widgets": "1"})
    proc = await cluster.akubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.stderr.strip().splitlines() == [
        'The ResourceQuota "bad" is invalid: ',
        '* spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0',
        '* spec.hard[widgets]: Invalid value: "widgets": must be a standard resource type or '
        'fully qualified',
        '* spec.hard[widgets]: Invalid value: "widgets": must be a standard resource for quota']
