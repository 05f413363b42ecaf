"""metrics.k8s.io served from real kubelet scrapes, read with the real kubectl.

A real API server scrapes, every second, the real kubelet HTTPS server
(`k8py.agent.kubelet.server`: its client-certificate authentication and authorization
through the API server, its /metrics/resource) of node n1, whose Node object points at it.
The kubelet's runtime is a stand-in CRI whose containers burn CPU at known rates and hold
known working sets (containerd is in tests/e2e/test_metrics.py), so `kubectl top` must show
exactly those figures.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import aiohttp
import pytest

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet import server as kubelet_server
from k8py.agent.kubelet.auth import KubeletAuth
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.api import errors
from k8py.runtime import cri_pb2 as pb
from k8py.server import pki
from k8py.server.apiserver import app as apiserver, inprocess, metricsapi
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.apiserver.podproxy import KubeletClient
from tests.conftest import eventually
from tests.e2e.conftest import find_kubectl
from tests.integration.inloop import free_port, running_apiserver

NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")
NAMESPACES = builtin("v1", "namespaces")
# the containers started an hour ago, on a whole millisecond like the samples' times, so
# each container's cumulative CPU is a whole number of nanoseconds (no rounding to drift)
T0 = (time.time_ns() - 3600 * 10**9) // 10**6 * 10**6

# (namespace, pod, container) -> (millicores, working set bytes)
BURN = {("default", "web", "main"): (250, 64 << 20), ("default", "web", "side"): (50, 16 << 20),
        ("other", "db", "main"): (100, 32 << 20)}
LABELS = {"web": {"app": "web"}, "db": {"app": "db"}}


class BurningCri:
    """ListContainers and ListContainerStats of containers burning CPU at BURN's rates: the
    cumulative CPU is the rate times the time since T0, read now (to the millisecond)."""

    async def list_containers(self, filter=None):
        return [pb.Container(id="-".join(key), created_at=T0) for key in BURN]

    async def list_container_stats(self, filter=None):
        now = time.time_ns() // 10**6 * 10**6
        out = []
        for (ns, pod, container), (millicores, memory) in BURN.items():
            out.append(pb.ContainerStats(
                attributes=pb.ContainerAttributes(
                    id=f"{ns}-{pod}-{container}", metadata=pb.ContainerMetadata(name=container),
                    labels={"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": ns,
                            "io.kubernetes.container.name": container}),
                cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(
                    value=(now - T0) * millicores // 1000)),
                memory=pb.MemoryUsage(timestamp=now,
                                      working_set_bytes=pb.UInt64Value(value=memory))))
        return out


def pod(namespace: str, name: str) -> dict:
    containers = sorted({c for (ns, p, c) in BURN if (ns, p) == (namespace, name)})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": LABELS[name]},
            "spec": {"nodeName": "n1",
                     "containers": [{"name": c, "image": "busybox"} for c in containers]}}


@pytest.fixture
async def cluster(tmp_path):
    """(admin client, run kubectl) against a server scraping n1's kubelet every second."""
    def give_credentials(app):  # the API server's kubelet client certificate
        certs = pki.ensure_pki(os.path.join(str(tmp_path / "data"), "server"),
                               cluster_domain="cluster.local", service_ip="10.43.0.1")
        app[apiserver.SCRAPER_KEY].kubelet = KubeletClient(*pki.ensure_kubelet_client(certs),
                                                           certs.ca_cert)

    async with running_apiserver(tmp_path, metric_resolution=1.0,
                                 customize=give_credentials) as api:
        kubeconfig = str(tmp_path / "admin.kubeconfig")
        pki.write_kubeconfig(api.certs, kubeconfig, api.url, 0o600)
        admin = Client(HttpTransport.from_kubeconfig(kubeconfig))
        port = free_port()
        cert, key = pki.ensure_kubelet_serving(api.certs, os.path.join(api.data_dir, "agent"),
                                               "n1", ("127.0.0.1",))
        await admin.create(NAMESPACES, {"metadata": {"name": "other"}})
        pods = [await admin.create(PODS, pod(ns, name), ns)
                for ns, name in (("default", "web"), ("other", "db"))]
        await admin.create(NODES, {"metadata": {"name": "n1", "labels": {"role": "worker"}}})
        await admin.patch(NODES, "n1", {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}, subresource="status")
        ready = asyncio.Event()
        kubelet = asyncio.create_task(kubelet_server.serve(
            AgentConfig(data_dir=api.data_dir, kubelet_port=port, tls_cert=cert, tls_key=key,
                        client_ca=api.certs.ca_cert),
            BurningCri(), lambda: pods, ready, host="127.0.0.1",
            auth=KubeletAuth(admin, "n1")))
        await asyncio.wait_for(ready.wait(), 10)
        home = str(tmp_path / "home")

        async def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            env = {**os.environ, "HOME": home, "KUBECONFIG": kubeconfig}
            proc = await asyncio.to_thread(
                subprocess.run, [find_kubectl(), "--cache-dir", os.path.join(home, "cache"),
                                 *args], capture_output=True, text=True, env=env, timeout=30)
            if check and proc.returncode:
                raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
            return proc

        try:
            yield api, admin, kubectl
        finally:
            kubelet.cancel()
            await asyncio.gather(kubelet, return_exceptions=True)
            await admin.close()


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


async def test_kubectl_top_shows_what_the_kubelet_measured(cluster):
    api, admin, kubectl = cluster

    async def top_pods_works():
        return (await kubectl("top", "pods", check=False)).returncode == 0
    await eventually(top_pods_works, timeout=30, interval=0.5)

    assert rows((await kubectl("top", "pods")).stdout) == [
        ["NAME", "CPU(cores)", "MEMORY(bytes)"], ["web", "300m", "80Mi"]]
    assert rows((await kubectl("top", "pods", "-A", "--sort-by", "cpu")).stdout) == [
        ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["default", "web", "300m", "80Mi"], ["other", "db", "100m", "32Mi"]]
    assert rows((await kubectl("top", "pods", "-A", "--sort-by", "memory", "-l",
                               "app=db")).stdout)[1:] == [["other", "db", "100m", "32Mi"]]
    assert rows((await kubectl("top", "pods", "web", "--containers")).stdout) == [
        ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["web", "main", "250m", "64Mi"], ["web", "side", "50m", "16Mi"]]
    nodes = rows((await kubectl("top", "nodes")).stdout)
    assert nodes[0] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert nodes[1][0] == "n1"  # the node's own figures: /proc of this host

    # the objects as metrics-server writes them
    raw = await admin.get(metricsapi.POD_METRICS, "web", "default")
    assert list(raw) == ["kind", "apiVersion", "metadata", "timestamp", "window",
                         "containers"]
    assert raw["metadata"]["labels"] == {"app": "web"}
    assert raw["containers"][0]["usage"]["memory"] == "64Mi"
    assert raw["window"].endswith("s")
    table = rows((await kubectl("get", "pods.metrics.k8s.io", "-A")).stdout)
    assert table[0] == ["NAMESPACE", "NAME", "CPU", "MEMORY", "WINDOW"]

    # selectors, and upstream's not-found answers
    listed = await admin.list(metricsapi.NODE_METRICS, label_selector="role=worker")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["n1"]
    listed = await admin.list(metricsapi.POD_METRICS, field_selector="metadata.name=db")
    assert [i["metadata"]["namespace"] for i in listed["items"]] == ["other"]
    for resource, name, ns, message in (
            (metricsapi.POD_METRICS, "nope", "default", 'pods "nope" not found'),
            (metricsapi.NODE_METRICS, "nope", None, 'node "nope" not found')):
        with pytest.raises(errors.NotFound) as caught:
            await admin.get(resource, name, ns)
        assert caught.value.message == message
    await admin.create(PODS, {"metadata": {"name": "idle", "namespace": "default"},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                       "default")
    proc = await kubectl("top", "pod", "idle", check=False)
    assert 'podmetrics.metrics.k8s.io "default/idle" not found' in proc.stderr

    # discovery, the verbs, and the HPA controller's access through its bootstrap role
    resources = (await kubectl("api-resources", "--api-group", "metrics.k8s.io", "-o",
                               "wide")).stdout
    assert "PodMetrics" in resources and "get,list" in resources
    hpa = Client(InProcessTransport(api.app[apiserver.REST_KEY], user=inprocess.controller(
        "horizontal-pod-autoscaler")))
    listed = await hpa.list(metricsapi.POD_METRICS, "default", label_selector="app=web")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web"]
    with pytest.raises(errors.Forbidden):
        await hpa.list(metricsapi.NODE_METRICS)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{api.url}/apis/metrics.k8s.io/v1beta1/nodes", json={},
                                ssl=api.ssl()) as answer:
            assert answer.status == 405


async def test_without_the_add_on_the_group_is_not_served(tmp_path):
    async with running_apiserver(tmp_path) as api:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.url}/apis/metrics.k8s.io/v1beta1/nodes",
                                   ssl=api.ssl()) as answer:
                assert answer.status == 404
            async with session.get(f"{api.url}/apis", ssl=api.ssl()) as answer:
                groups = [g["name"] for g in (await answer.json())["groups"]]
                assert "metrics.k8s.io" not in groups and "apps" in groups
