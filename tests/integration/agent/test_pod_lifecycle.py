"""Pod lifecycles through the real pod workers (planner and executor) on the in-memory
runtime (`k8py.runtime.fake`), against a real API server in the test's loop: no root, no
containerd. The e2e tier runs the same workers on real containerd."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet.podmanager import PodManager
from k8py.agent.kubelet.volumes import VolumeManager
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.runtime.fake import FakeRuntime
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.inprocess import InProcessTransport
from tests.conftest import eventually
from tests.integration.inloop import running_apiserver

PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")
NODE = "fake-node"
IMAGE = "k8py.local/busybox:latest"


class Node:
    def __init__(self, client: Client, runtime: FakeRuntime, manager: PodManager):
        self.client, self.runtime, self.manager = client, runtime, manager

    async def create(self, name: str, spec: dict) -> dict:
        return await self.client.create(PODS, {
            "metadata": {"name": name},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, **spec}},
            "default")

    async def pod(self, name: str) -> dict:
        return await self.client.get(PODS, name, "default")

    async def until(self, name: str, test, what: str, timeout: float = 15) -> dict:
        async def check():
            pod = await self.pod(name)
            return pod if test(pod) else None
        return await eventually(check, timeout, interval=0.05, what=what)


def container(name: str, command: str, **more) -> dict:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", command], **more}


def status_of(pod: dict, name: str, key: str = "containerStatuses") -> dict:
    return next((s for s in (pod.get("status") or {}).get(key) or [] if s["name"] == name), {})


def state(pod: dict, name: str, key: str = "containerStatuses") -> str:
    return next(iter(status_of(pod, name, key).get("state") or {"": None}))


@pytest.fixture
async def node(tmp_path):
    async with running_apiserver(tmp_path, "memory://") as server:
        client = Client(InProcessTransport(server.app[apiserver.REST_KEY]),
                        field_manager="k8py-kubelet")
        await client.create(NODES, {"metadata": {"name": NODE}})
        runtime = FakeRuntime(images=[IMAGE])
        config = AgentConfig(data_dir=str(tmp_path / "data"), node_name=NODE,
                             node_ip="10.99.0.2", backoff_base=0.2, backoff_max=0.8)
        volumes = VolumeManager(client, config.pods_dir, NODE)
        network = asyncio.Event()
        network.set()
        manager = PodManager(client, runtime, config, node_name=NODE, node_ip="10.99.0.2",
                             node=lambda: None, volumes=volumes, network_ready=network)
        ready = asyncio.Event()
        task = asyncio.create_task(manager.run(ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            yield Node(client, runtime, manager)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runtime.close()


async def test_init_containers_then_containers_then_succeeded(node):
    await node.create("job", {"restartPolicy": "Never",
                              "initContainers": [container("first", "exit 0"),
                                                 container("second", "sleep 0.1; exit 0")],
                              "containers": [container("main", "sleep 0.2; exit 0")]})
    pod = await node.until("job", lambda p: p["status"].get("phase") == "Succeeded",
                           "the pod Succeeded")
    assert [s["state"]["terminated"]["reason"] for s in pod["status"]["initContainerStatuses"]] \
        == ["Completed", "Completed"]
    assert status_of(pod, "main")["state"]["terminated"]["exitCode"] == 0
    started = [subject for call, subject in node.runtime.calls if call == "StartContainer"]
    assert started == ["first", "second", "main"]  # in order, one at a time
    # a finished pod keeps its object but not its sandbox
    await eventually(lambda: all(s.state != 0 for s in node.runtime.sandboxes.values()), 10,
                     what="the sandbox stopped")


async def test_a_failed_init_container_fails_a_never_pod(node):
    await node.create("broken", {"restartPolicy": "Never",
                                 "initContainers": [container("setup", "exit 3")],
                                 "containers": [container("main", "sleep 60")]})
    pod = await node.until("broken", lambda p: p["status"].get("phase") == "Failed",
                           "the pod Failed")
    assert status_of(pod, "setup", "initContainerStatuses")["state"]["terminated"][
        "exitCode"] == 3
    assert ("StartContainer", "main") not in node.runtime.calls


async def test_crash_loop_restarts_with_back_off(node):
    await node.create("crasher", {"containers": [container("main", "exit 1")]})
    pod = await node.until("crasher", lambda p: status_of(p, "main").get("restartCount", 0) >= 2,
                           "two restarts")
    assert status_of(pod, "main")["lastState"]["terminated"]["exitCode"] == 1
    await node.until("crasher",
                     lambda p: (status_of(p, "main")["state"].get("waiting") or {}).get("reason")
                     == "CrashLoopBackOff", "CrashLoopBackOff")
    events = await node.client.list(builtin("v1", "events"), "default")
    assert any(e["reason"] == "BackOff" for e in events["items"])


async def test_on_failure_does_not_restart_a_success(node):
    await node.create("once", {"restartPolicy": "OnFailure",
                               "containers": [container("main", "sleep 0.1; exit 0")]})
    pod = await node.until("once", lambda p: p["status"].get("phase") == "Succeeded",
                           "Succeeded")
    assert status_of(pod, "main")["restartCount"] == 0


async def test_liveness_failure_kills_and_restarts(node):
    node.runtime.exec_results["probe-fails"] = 1
    await node.create("sick", {"containers": [container(
        "main", "serve", livenessProbe={"exec": {"command": ["probe-fails"]},
                                        "periodSeconds": 1, "failureThreshold": 1})]})
    pod = await node.until("sick", lambda p: status_of(p, "main").get("restartCount", 0) >= 1,
                           "a restart after the liveness probe failed", timeout=20)
    assert status_of(pod, "main")["lastState"]["terminated"]["exitCode"] == 143
    events = await node.client.list(builtin("v1", "events"), "default")
    assert any(e["reason"] == "Unhealthy" for e in events["items"])


async def test_graceful_deletion_stops_everything_and_deletes_the_pod(node):
    await node.create("web", {"containers": [container("main", "serve")]})
    await node.until("web", lambda p: state(p, "main") == "running", "running")
    await node.client.delete(PODS, "web", "default")

    async def gone():
        try:
            await node.pod("web")
        except Exception:  # NotFound
            return True
        return False
    await eventually(gone, 15, what="the pod deleted by its kubelet")
    assert not node.runtime.containers and not node.runtime.sandboxes
    assert ("StopContainer", "main") in node.runtime.calls


async def test_a_missing_image_waits_in_image_pull_back_off(node):
    await node.create("noimage", {"containers": [{"name": "main",
                                                  "image": "k8py.local/nope:1"}]})
    pod = await node.until("noimage", lambda p: (status_of(p, "main").get("state", {}).get(
        "waiting") or {}).get("reason") in ("ErrImagePull", "ImagePullBackOff"),
        "ErrImagePull")
    assert pod["status"]["phase"] == "Pending"


async def test_ephemeral_container_runs_once_in_its_target(node):
    await node.create("target", {"containers": [container("main", "serve")]})
    await node.until("target", lambda p: state(p, "main") == "running", "running")
    await node.client.patch(PODS, "target", {"spec": {"ephemeralContainers": [
        container("debugger", "exit 0", targetContainerName="main")]}}, "default",
        subresource="ephemeralcontainers")
    pod = await node.until("target", lambda p: state(p, "debugger",
                                                     "ephemeralContainerStatuses")
                           == "terminated", "the debug container ran")
    assert status_of(pod, "debugger", "ephemeralContainerStatuses")["restartCount"] == 0
    [debugger] = [c for c in node.runtime.containers.values()
                  if c.config.metadata.name == "debugger"]
    options = debugger.config.linux.security_context.namespace_options
    main = next(c for c in node.runtime.containers.values() if c.config.metadata.name == "main")
    assert options.target_id == main.id
    await asyncio.sleep(0.5)  # it stays exited
    assert sum(1 for call, subject in node.runtime.calls
               if call == "StartContainer" and subject == "debugger") == 1
