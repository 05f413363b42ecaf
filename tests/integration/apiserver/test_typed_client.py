"""The official Python client's typed APIs read whole responses: what upstream's strategies
put in a created object's status, and what a DELETE returns (the deleted object for the
kinds whose storage returns it, the object still being deleted, or a Status), must be
there for them. The client is synchronous: its calls run in threads beside the server."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client, config

from k8py.server import pki


@pytest.fixture
def api_client(server, tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
    return config.new_client_from_config(config_file=kubeconfig)


def run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


def pod(name, resources=None):
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
        containers=[client.V1Container(name="c", image="busybox",
                                       resources=client.V1ResourceRequirements(
                                           **(resources or {})))]))


async def test_created_pod_has_phase_and_qos_class(api_client):
    core = client.CoreV1Api(api_client)
    created = await run(core.create_namespaced_pod, "default", pod("plain"))
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"
    guaranteed = await run(core.create_namespaced_pod, "default", pod(
        "limited", {"limits": {"cpu": "500m", "memory": "64Mi"}}))
    assert guaranteed.status.qos_class == "Guaranteed"
    # upstream's defaulting: a limit without a request requests the limit
    assert guaranteed.spec.containers[0].resources.requests == {"cpu": "500m",
                                                                "memory": "64Mi"}
    burstable = await run(core.create_namespaced_pod, "default", pod(
        "requested", {"requests": {"cpu": "100m"}}))
    assert burstable.status.qos_class == "Burstable"
    read = await run(core.read_namespaced_pod, "plain", "default")
    assert read.status.phase == "Pending"


async def test_created_workloads_carry_their_initial_status(api_client):
    apps = client.AppsV1Api(api_client)
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "x"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))
    selector = client.V1LabelSelector(match_labels={"app": "x"})
    rs = await run(apps.create_namespaced_replica_set, "default", client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="rs"),
        spec=client.V1ReplicaSetSpec(selector=selector, template=template)))
    assert rs.status is not None and rs.status.replicas == 0
    ds = await run(apps.create_namespaced_daemon_set, "default", client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="ds"),
        spec=client.V1DaemonSetSpec(selector=selector, template=template)))
    assert (ds.status.current_number_scheduled, ds.status.desired_number_scheduled,
            ds.status.number_misscheduled, ds.status.number_ready) == (0, 0, 0, 0)
    deployment = await run(apps.create_namespaced_deployment, "default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(selector=selector, template=template)))
    assert deployment.status is not None
    core = client.CoreV1Api(api_client)
    service = await run(core.create_namespaced_service, "default", client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    assert service.status.load_balancer is not None


async def test_delete_returns_what_upstream_returns(api_client):
    core = client.CoreV1Api(api_client)
    await run(core.create_namespaced_service, "default", client.V1Service(
        metadata=client.V1ObjectMeta(name="gone"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    deleted = await run(core.delete_namespaced_service, "gone", "default")
    assert isinstance(deleted, client.V1Service) and deleted.metadata.name == "gone"
    assert deleted.spec.cluster_ip  # the whole object, as it was
    await run(core.create_namespaced_pod, "default", pod("unbound"))
    deleted_pod = await run(core.delete_namespaced_pod, "unbound", "default")
    assert isinstance(deleted_pod, client.V1Pod) and deleted_pod.metadata.name == "unbound"
    await run(core.create_namespaced_config_map, "default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cm")))
    status = await run(core.delete_namespaced_config_map, "cm", "default")
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"]["name"] == "cm" and status["details"]["kind"] == "configmaps"


async def test_deferred_delete_is_200_with_the_object(client_):
    """Finalizers hold the object: 200 and the object with deletionTimestamp; 202 only
    when the request set the deprecated orphanDependents: false."""
    cm = "/api/v1/namespaces/default/configmaps"
    await client_.request("POST", cm, {"metadata": {"name": "held",
                                                    "finalizers": ["example.com/x"]}})
    status, body = await client_.request("DELETE", f"{cm}/held")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    await client_.request("POST", cm, {"metadata": {"name": "held2",
                                                    "finalizers": ["example.com/x"]}})
    status, body = await client_.request("DELETE", f"{cm}/held2",
                                         {"orphanDependents": False})
    assert status == 202 and body["metadata"]["deletionTimestamp"]


@pytest.fixture
def client_(client):
    return client


async def test_ephemeral_containers_through_their_subresource(api_client):
    """pods/ephemeralcontainers adds debug containers (as `kubectl debug` does, with a
    strategic merge patch), changes nothing else, and refuses to change or remove one."""
    core = client.CoreV1Api(api_client)
    await run(core.create_namespaced_pod, "default", pod("target"))
    patch = {"spec": {"ephemeralContainers": [{
        "name": "debugger", "image": "busybox", "targetContainerName": "c",
        "stdin": True, "tty": True}]}}
    patched = await run(core.patch_namespaced_pod_ephemeralcontainers, "target", "default",
                        patch)
    [debugger] = patched.spec.ephemeral_containers
    assert debugger.target_container_name == "c"
    assert debugger.termination_message_path == "/dev/termination-log"
    assert patched.metadata.managed_fields[-1].subresource == "ephemeralcontainers"
    read = await run(core.read_namespaced_pod_ephemeralcontainers, "target", "default")
    assert [c.name for c in read.spec.ephemeral_containers] == ["debugger"]

    # the main resource neither changes nor drops them
    body = await run(core.read_namespaced_pod, "target", "default")
    body.spec.ephemeral_containers = None
    body.metadata.labels = {"seen": "yes"}
    replaced = await run(core.replace_namespaced_pod, "target", "default", body)
    assert [c.name for c in replaced.spec.ephemeral_containers] == ["debugger"]

    # the subresource changes only them
    changed = await run(core.patch_namespaced_pod_ephemeralcontainers, "target", "default",
                        {"metadata": {"labels": {"seen": "no"}}, "spec": {
                            "ephemeralContainers": [{"name": "second", "image": "busybox"}]}})
    assert changed.metadata.labels == {"seen": "yes"}
    assert [c.name for c in changed.spec.ephemeral_containers] == ["debugger", "second"]

    async def refused(body) -> dict:
        with pytest.raises(client.ApiException) as caught:
            await run(core.replace_namespaced_pod_ephemeralcontainers, "target", "default",
                      body)
        assert caught.value.status == 422
        return json.loads(caught.value.body)

    current = await run(core.read_namespaced_pod, "target", "default")
    current.spec.ephemeral_containers = current.spec.ephemeral_containers[:1]
    status = await refused(current)
    assert 'existing ephemeral containers "second" may not be removed' in status["message"]

    current = await run(core.read_namespaced_pod, "target", "default")
    current.spec.ephemeral_containers[0].image = "other"
    status = await refused(current)
    assert status["details"]["causes"][0]["field"] == "spec.ephemeralContainers[0]"

    current = await run(core.read_namespaced_pod, "target", "default")
    current.spec.ephemeral_containers.append(client.V1EphemeralContainer(
        name="third", image="busybox", target_container_name="nope",
        ports=[client.V1ContainerPort(container_port=80)]))
    status = await refused(current)
    fields = {c["field"]: c["message"] for c in status["details"]["causes"]}
    assert fields["spec.ephemeralContainers[2].targetContainerName"] == 'Not found: "nope"'
    assert fields["spec.ephemeralContainers[2].ports"] == \
        "Forbidden: cannot be set for an Ephemeral Container"
