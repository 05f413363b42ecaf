"""Container environments resolved against a real API server (in the test loop): ConfigMaps
and Secrets read through `client_lookup`, upstream's errors for missing sources, the node's
allocatable as the default limit, and service links from the Services the server holds (the
`kubernetes` Service of `default` included)."""

from __future__ import annotations

import base64

import pytest

from k8py.agent.kubelet import specs
from k8py.agent.kubelet.env import ContainerConfigError, client_lookup, env_map, resolve_env
from k8py.api.resources import builtin
from tests.integration.controllers.conftest import start_control_plane

CONFIGMAPS = builtin("v1", "configmaps")
SECRETS = builtin("v1", "secrets")
SERVICES = builtin("v1", "services")
NODES = builtin("v1", "nodes")


@pytest.fixture
async def cp(tmp_path):
    async with start_control_plane(tmp_path, nodes=1) as control_plane:
        yield control_plane


def make_pod(container: dict) -> dict:
    return {"metadata": {"name": "env-pod", "namespace": "default", "uid": "uid-env"},
            "spec": {"nodeName": "sim-node-0", "containers": [
                {"name": "app", "image": "busybox", **container}]},
            "status": {"podIP": "10.42.0.3"}}


async def test_env_from_the_api(cp):
    client = cp.client
    await client.create(CONFIGMAPS, {"metadata": {"name": "app-config", "namespace": "default"},
                                     "data": {"MODE": "prod", "PORT": "8080"}})
    await client.create(SECRETS, {"metadata": {"name": "app-secret", "namespace": "default"},
                                  "data": {"TOKEN": base64.b64encode(b"t0k").decode()}})
    await client.create(SERVICES, {"metadata": {"name": "backend", "namespace": "default"},
                                   "spec": {"ports": [{"name": "http", "port": 80}],
                                            "selector": {"app": "backend"}}})
    services = (await client.list(SERVICES))["items"]
    node = await client.get(NODES, "sim-node-0")
    pod = make_pod({
        "command": ["/bin/sh", "-c", "echo $(MODE) on $(PORT)"],
        "resources": {"limits": {"memory": "32Mi"}},
        "envFrom": [{"configMapRef": {"name": "app-config"}}],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app-secret",
                                                                 "key": "TOKEN"}}},
                {"name": "URL", "value": "http://$(BACKEND_SERVICE_HOST):$(PORT)"},
                {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                    "resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]})
    container = pod["spec"]["containers"][0]
    envs = await resolve_env(pod, container, client_lookup(client), node, services=services)
    env = env_map(envs)
    backend_ip = next(s["spec"]["clusterIP"] for s in services
                      if s["metadata"]["name"] == "backend")
    assert env["MODE"] == "prod" and env["TOKEN"] == "t0k"
    assert env["URL"] == f"http://{backend_ip}:8080"
    assert env["CPUS"] == node["status"]["allocatable"]["cpu"]
    assert env["MEM"] == "32"
    assert env["HOST_IP"] == next(a["address"] for a in node["status"]["addresses"]
                                  if a["type"] == "InternalIP")
    assert env["KUBERNETES_SERVICE_HOST"] == next(
        s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "kubernetes")
    assert env["BACKEND_SERVICE_PORT_HTTP"] == "80"
    # The environment feeds the command's $(VAR)s.
    command, _ = specs.command_and_args(container, envs)
    assert command == ["/bin/sh", "-c", "echo prod on 8080"]


async def test_missing_sources_from_the_api(cp):
    lookup = client_lookup(cp.client)
    await cp.client.create(CONFIGMAPS, {"metadata": {"name": "partial", "namespace": "default"},
                                        "data": {"A": "1"}})
    cases = [
        ({"envFrom": [{"configMapRef": {"name": "x"}}]}, 'configmap "x" not found'),
        ({"envFrom": [{"secretRef": {"name": "x"}}]}, 'secret "x" not found'),
        ({"env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "partial",
                                                                  "key": "y"}}}]},
         "couldn't find key y in ConfigMap default/partial"),
    ]
    for container, message in cases:
        pod = make_pod(container)
        with pytest.raises(ContainerConfigError) as caught:
            await resolve_env(pod, pod["spec"]["containers"][0], lookup, None)
        assert str(caught.value) == message
    pod = make_pod({"envFrom": [{"secretRef": {"name": "x", "optional": True}}],
                    "env": [{"name": "B", "valueFrom": {"configMapKeyRef": {
                        "name": "partial", "key": "y", "optional": True}}}]})
    assert await resolve_env(pod, pod["spec"]["containers"][0], lookup, None) == []
