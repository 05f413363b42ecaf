"""The real kubelet: `k8py server` with its embedded agent (its own containerd, runc, the CNI
plugins) in a network namespace this test creates, driven by the real kubectl 1.32.

Everything runs inside the namespace (`nsenter --net`, not `ip netns exec`: the latter
remounts /sys, which hides the cgroup mounts runc needs; `tests.e2e.netns` states the rules),
so the pod bridge and pod traffic never touch the host's network. The node's address is one
end of a veth pair inside the namespace. At the end every pod is deleted, the server stopped
(it stops containerd), any process left holding the data dir killed, what is left mounted
under it unmounted, and the namespace removed.

Needs root, containerd, runc and the CNI plugins (./install.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import stop_process, wait_for
from tests.e2e import netns
from tests.e2e.conftest import find_kubectl

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("runc")
    or not os.path.exists("/usr/lib/cni/bridge"),
    reason="needs root, containerd, runc and the CNI plugins")

NODE_IP = "10.99.0.2"
NODE = "e2e-node"
BUSYBOX = "k8py.local/busybox:latest"


class Node:
    """The netns, the server process and kubectl in it."""

    def __init__(self, root, netns_name: str):
        self.root = root
        self.netns = netns_name
        self.data = root / "data"
        self.kubeconfig = str(root / "kubeconfig.yaml")
        self.kubectl_path = find_kubectl()
        self.proc: subprocess.Popen | None = None
        self.log = None
        self.env = {**os.environ, "HOME": str(root), "KUBECONFIG": self.kubeconfig}

    def enter(self) -> list[str]:
        return netns.nsenter(self.netns)

    def start(self) -> None:
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [*self.enter(), sys.executable, "-m", "k8py", "server", "--data-dir",
             str(self.data), "--bind-address", "127.0.0.1", "--https-listen-port", "6443",
             "--write-kubeconfig", self.kubeconfig, "--node-name", NODE, "--node-ip",
             NODE_IP, "--node-label", "k8py.io/e2e=agent"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH":
                                                            os.getcwd()})

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.enter(), self.kubectl_path, "--cache-dir",
                               str(self.root / "cache"), *args],
                              input=input, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}\n"
                                 + self.server_log()[-3000:])
        return proc

    def server_log(self) -> str:
        try:
            return (self.root / "server.log").read_text()
        except OSError:
            return ""

    def get(self, kind: str, name: str = "") -> dict:
        out = self.kubectl("get", kind, *([name] if name else []), "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def apply(self, manifest: dict) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.server_log()[-3000:])
            if not os.path.exists(self.kubeconfig):
                return False
            node = self.get("node", NODE)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (node.get("status") or {}).get("conditions") or [])
        wait_for(ready, timeout, "node Ready")


def pod_manifest(name: str, command: str, *, grace: int = 30, **extra) -> dict:
    container = {"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", command]}
    container.update(extra.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": grace, "containers": [container],
                     **extra}}


def container_status(pod: dict) -> dict:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


@contextlib.contextmanager
def running_node(node_class: type[Node], root) -> Iterator[Node]:
    """A node of `node_class` in a network namespace of its own, with the busybox image
    to import, started and Ready; on the way out its pods deleted, the server stopped,
    leftovers killed and unmounted, the namespace removed."""
    with netns.created() as name:
        n = node_class(root, name)
        try:
            netns.add_node_address(n.netns, NODE_IP)
            images = n.data / "agent" / "images"
            images.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "k8py", "images", "build-busybox", "-o",
                            str(images / "busybox.tar")], check=True, capture_output=True)
            n.start()
            n.wait_ready()
            yield n
        finally:
            try:
                if n.proc is not None and n.proc.poll() is None:
                    n.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true",
                              check=False, timeout=60)
                    stop_process(n.proc)
            finally:
                netns.kill_leftovers(str(n.data))
                if n.log:
                    n.log.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(Node, tmp_path_factory.mktemp("agent")) as n:
        yield n


def test_node_registers_with_capacity_labels_and_images(node):
    body = node.get("node", NODE)
    labels = body["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "linux" and labels["k8py.io/e2e"] == "agent"
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    status = body["status"]
    assert status["capacity"]["cpu"] == str(os.cpu_count())
    assert status["capacity"]["pods"] == "110"
    assert {"type": "InternalIP", "address": NODE_IP} in status["addresses"]
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    lease = json.loads(node.kubectl("get", "lease", "-n", "kube-node-lease", NODE, "-o",
                                    "json").stdout)
    assert lease["spec"]["holderIdentity"] == NODE


def test_busybox_pod_runs_with_an_ip_from_the_pod_cidr(node):
    # the crashing pod is created now and checked later, so its back-off runs meanwhile
    node.apply(pod_manifest("crasher", "echo crashing; exit 3"))
    node.apply(pod_manifest("web", "trap 'exit 0' TERM; while true; do sleep 1; done"))
    pod = wait_for(lambda: (p := node.get("pod", "web")) and
                   p["status"].get("phase") == "Running" and p, 60, "web Running")
    cidr = node.get("node", NODE)["spec"]["podCIDR"]
    import ipaddress
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(cidr)
    assert pod["status"]["hostIP"] == NODE_IP
    status = container_status(pod)
    assert status["ready"] and status["started"] and status["containerID"].startswith(
        "containerd://")
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions == {"PodReadyToStartContainers": "True", "Initialized": "True",
                          "ContainersReady": "True", "Ready": "True",
                          "PodScheduled": "True"}
    reasons = node.kubectl("get", "events", "--field-selector",
                           "involvedObject.name=web", "-o",
                           "jsonpath={.items[*].reason}").stdout.split()
    assert {"Pulled", "Created", "Started"} <= set(reasons)


def test_host_network_pod_and_missing_image(node):
    node.apply(pod_manifest("hostnet", "sleep 3600", hostNetwork=True))
    node.apply(pod_manifest("missing", "true", container={
        "image": "k8py.local/no-such-image:1.0", "imagePullPolicy": "IfNotPresent"}))
    pod = wait_for(lambda: (p := node.get("pod", "hostnet")) and
                   p["status"].get("phase") == "Running" and p, 60, "hostnet Running")
    assert pod["status"]["podIP"] == NODE_IP
    waiting = wait_for(lambda: container_status(node.get("pod", "missing")).get(
        "state", {}).get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
        and container_status(node.get("pod", "missing"))["state"]["waiting"], 60,
        "ErrImagePull")
    assert "k8py.local/no-such-image:1.0" in waiting.get("message", "")
    node.kubectl("delete", "pod", "hostnet", "missing", "--grace-period=1")


def test_readiness_probe_gates_ready(node):
    node.apply(pod_manifest(
        "slow-ready", "sleep 4; touch /tmp/ready; sleep 3600", grace=1,
        container={"readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                                      "periodSeconds": 1}}))
    pod = wait_for(lambda: (p := node.get("pod", "slow-ready")) and
                   p["status"].get("phase") == "Running" and p, 60, "slow-ready Running")
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
    assert ready == "False" and not container_status(pod)["ready"]
    wait_for(lambda: {c["type"]: c["status"] for c in node.get(
        "pod", "slow-ready")["status"]["conditions"]}["Ready"] == "True", 30,
        "Ready once the probe passes")
    node.kubectl("delete", "pod", "slow-ready", "--wait=false")


def test_failing_liveness_probe_restarts_the_container(node):
    node.apply(pod_manifest(
        "unhealthy", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600", grace=1,
        container={"livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                     "periodSeconds": 1, "failureThreshold": 2}}))
    first = wait_for(lambda: container_status(node.get("pod", "unhealthy")).get(
        "containerID"), 60, "unhealthy started")
    pod = wait_for(lambda: (p := node.get("pod", "unhealthy")) and
                   container_status(p).get("restartCount", 0) >= 1 and p, 40,
                   "restarted after the liveness probe failed")
    status = container_status(pod)
    assert status["lastState"]["terminated"]["containerID"] == first
    assert status["containerID"] != first
    messages = node.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=unhealthy,reason=Unhealthy", "-o",
                            "jsonpath={.items[*].message}").stdout
    assert "Liveness probe failed" in messages
    node.kubectl("delete", "pod", "unhealthy", "--wait=false")


def test_delete_is_graceful(node):
    term_dir = node.root / "term"
    term_dir.mkdir()
    node.apply(pod_manifest(
        "polite", "trap 'echo TERM > /out/polite; exit 0' TERM; "
        "while true; do sleep 0.2; done", grace=20,
        container={"volumeMounts": [{"name": "out", "mountPath": "/out"}],
                   "lifecycle": {
                       "postStart": {"exec": {"command": ["sh", "-c",
                                                          "echo up > /out/poststart"]}},
                       "preStop": {"exec": {"command": ["sh", "-c",
                                                        "echo pre > /out/prestop"]}}}},
        volumes=[{"name": "out", "hostPath": {"path": str(term_dir)}}]))
    node.apply(pod_manifest("stubborn", "trap '' TERM; while true; do sleep 0.2; done",
                            grace=3))
    for name in ("polite", "stubborn"):
        wait_for(lambda name=name: node.get("pod", name).get("status", {}).get(
            "phase") == "Running", 60, f"{name} Running")
    started = time.monotonic()
    node.kubectl("delete", "pod", "polite")
    assert time.monotonic() - started < 10, "a container that exits on SIGTERM stops at once"
    assert (term_dir / "polite").read_text().strip() == "TERM"
    assert (term_dir / "poststart").read_text().strip() == "up"
    assert (term_dir / "prestop").read_text().strip() == "pre"
    started = time.monotonic()
    node.kubectl("delete", "pod", "stubborn")
    took = time.monotonic() - started
    assert 2.5 <= took < 12, f"SIGKILL after the 3 s grace period, took {took:.1f}s"
    assert not node.get("pod", "stubborn")


def test_crash_loop_backs_off_with_growing_delays(node):
    seen: dict[int, float] = {}

    def restarts():
        status = container_status(node.get("pod", "crasher"))
        count = status.get("restartCount", 0)
        seen.setdefault(count, time.monotonic())
        return count >= 3 and status

    status = wait_for(restarts, 90, "crasher restarted 3 times", interval=0.5)
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    pod = node.get("pod", "crasher")
    waiting = container_status(pod)["state"].get("waiting") or {}
    assert waiting.get("reason") in (None, "CrashLoopBackOff")
    if 2 in seen and 3 in seen and 1 in seen:
        assert seen[3] - seen[2] > seen[2] - seen[1] + 4, seen
    wait_for(lambda: container_status(node.get("pod", "crasher"))["state"].get(
        "waiting", {}).get("reason") == "CrashLoopBackOff", 30, "CrashLoopBackOff shown")
    reasons = node.kubectl("get", "events", "--field-selector",
                           "involvedObject.name=crasher", "-o",
                           "jsonpath={.items[*].reason}").stdout.split()
    assert "BackOff" in reasons
    node.kubectl("delete", "pod", "crasher", "--wait=false")


def test_configmap_and_secret_volumes_appear_and_follow_updates(node):
    node.kubectl("create", "configmap", "settings", "--from-literal=greeting=hello")
    node.kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    manifest = pod_manifest("mounts", "sleep 3600", container={"volumeMounts": [
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
        "envFrom": [{"configMapRef": {"name": "settings"}}]})
    manifest["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "settings"}},
                                   {"name": "creds", "secret": {"secretName": "creds"}}]
    node.apply(manifest)
    wait_for(lambda: node.get("pod", "mounts").get("status", {}).get("phase") == "Running",
             60, "mounts Running")

    def read(path: str) -> str:
        return node.kubectl("exec", "mounts", "--", "cat", path, check=False).stdout

    assert read("/etc/settings/greeting") == "hello"
    assert read("/etc/creds/password") == "s3cret"
    assert "greeting=hello" in node.kubectl("exec", "mounts", "--", "env").stdout
    node.kubectl("patch", "configmap", "settings", "-p", '{"data": {"greeting": "bonjour"}}')
    node.kubectl("patch", "secret", "creds", "-p", '{"stringData": {"password": "n3w"}}')
    wait_for(lambda: read("/etc/settings/greeting") == "bonjour", 60,
             "the configMap update visible in the pod")
    wait_for(lambda: read("/etc/creds/password") == "n3w", 60,
             "the secret update visible in the pod")
    node.kubectl("delete", "pod", "mounts", "--grace-period=1")


def test_limits_show_in_the_container_cgroup(node):
    node.apply(pod_manifest("limited", "sleep 3600", container={"resources": {
        "limits": {"cpu": "500m", "memory": "64Mi"}}}))
    pod = wait_for(lambda: (p := node.get("pod", "limited")) and
                   p["status"].get("phase") == "Running" and p, 60, "limited Running")
    assert pod["status"]["qosClass"] == "Guaranteed"
    container = container_status(pod)["containerID"].split("://", 1)[1]
    uid = pod["metadata"]["uid"]

    def cgroup(controller: str, name: str) -> str:
        matches = [os.path.join(root, name) for root, _, files in
                   os.walk(f"/sys/fs/cgroup/{controller}/k8py") if name in files
                   and container in root and uid in root]
        assert matches, f"no {controller} cgroup for container {container}"
        with open(matches[0]) as f:
            return f.read().strip()

    assert cgroup("memory", "memory.limit_in_bytes") == str(64 * 2 ** 20)
    assert cgroup("cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup("cpu", "cpu.cfs_period_us") == "100000"
    assert cgroup("cpu", "cpu.shares") == "512"
    node.kubectl("delete", "pod", "limited", "--grace-period=1")


def test_agent_killed_and_restarted_adopts_running_pods(node):
    before = node.get("pod", "web")
    container_id = container_status(before)["containerID"]
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    node.log.close()
    node.start()
    node.wait_ready()
    pod = wait_for(lambda: (p := node.get("pod", "web")) and
                   p["status"].get("phase") == "Running" and
                   container_status(p).get("ready") and p, 30, "web Running after restart")
    status = container_status(pod)
    assert status["containerID"] == container_id
    assert status["restartCount"] == 0
    started = time.monotonic()
    node.kubectl("delete", "pod", "web")
    assert time.monotonic() - started < 10
