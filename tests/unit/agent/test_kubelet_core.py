"""Pure parts of the kubelet core: pod status and phase, back-off, probe thresholds, node
capacity and conditions."""

from __future__ import annotations

from k8py.agent.kubelet import node, status
from k8py.agent.kubelet.backoff import Backoff
from k8py.agent.kubelet.planner import restart_wanted
from k8py.agent.kubelet.pulls import default_pull_policy
from k8py.agent.kubelet.probes import Threshold, resolve_port
from k8py.api.qos import pod_qos_class

NOW = "2026-11-26T10:00:00Z"
SECOND = 1_000_000_000


def pod(containers=("main",), init=(), policy="Always", **spec):
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": policy,
                     "containers": [{"name": n, "image": "busybox"} for n in containers],
                     "initContainers": [{"name": n, "image": "busybox"} for n in init],
                     **spec},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True",
                 "lastTransitionTime": "2026-11-26T09:00:00Z"}]}}


def running(cid="c1", attempt=0):
    return status.Observed(id=cid, state=status.CRI_RUNNING, attempt=attempt,
                           started_at=100 * SECOND, image_ref="sha256:abc")


def exited(cid="c0", code=1, attempt=0, reason=""):
    return status.Observed(id=cid, state=status.CRI_EXITED, attempt=attempt,
                           started_at=100 * SECOND, finished_at=101 * SECOND,
                           exit_code=code, reason=reason)


def conditions(result):
    return {c["type"]: c["status"] for c in result["conditions"]}


def test_running_ready_pod():
    view = status.PodView(sandbox_ready=True, pod_ip="10.42.0.5", host_ip="10.0.0.1")
    view.containers["main"] = status.ContainerView(current=running(), ready=True,
                                                   started=True)
    result = status.pod_status(pod(), view, NOW)
    assert result["phase"] == "Running"
    assert result["podIP"] == "10.42.0.5" and result["podIPs"] == [{"ip": "10.42.0.5"}]
    assert result["hostIPs"] == [{"ip": "10.0.0.1"}]
    assert conditions(result) == {"PodReadyToStartContainers": "True", "Initialized": "True",
                                  "ContainersReady": "True", "Ready": "True",
                                  "PodScheduled": "True"}
    scheduled = [c for c in result["conditions"] if c["type"] == "PodScheduled"][0]
    assert scheduled["lastTransitionTime"] == "2026-11-26T09:00:00Z"  # kept: status same
    main = result["containerStatuses"][0]
    assert main["containerID"] == "containerd://c1" and main["ready"] and main["started"]
    assert main["state"] == {"running": {"startedAt": "1970-01-01T00:01:40Z"}}
    assert result["qosClass"] == "BestEffort"


def test_readiness_gates_ready():
    view = status.PodView(sandbox_ready=True, pod_ip="10.42.0.5")
    view.containers["main"] = status.ContainerView(current=running(), ready=False,
                                                   started=True)
    result = status.pod_status(pod(), view, NOW)
    assert result["phase"] == "Running"
    assert conditions(result)["Ready"] == "False"
    ready = [c for c in result["conditions"] if c["type"] == "Ready"][0]
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [main]"


def test_crash_loop_shows_waiting_and_last_state():
    view = status.PodView(sandbox_ready=True, pod_ip="10.42.0.5")
    view.containers["main"] = status.ContainerView(
        current=exited("c2", code=3, attempt=2), previous=exited("c1", attempt=1),
        waiting=("CrashLoopBackOff", "back-off 20s restarting failed container=main"))
    result = status.pod_status(pod(), view, NOW)
    main = result["containerStatuses"][0]
    assert main["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert main["lastState"]["terminated"]["exitCode"] == 3
    assert main["lastState"]["terminated"]["reason"] == "Error"
    assert main["restartCount"] == 2
    assert result["phase"] == "Running"  # restartPolicy Always: it will run again


def test_phases_for_restart_policies():
    done = status.PodView(sandbox_ready=True)
    done.containers["main"] = status.ContainerView(current=exited(code=0))
    assert status.pod_status(pod(policy="Never"), done, NOW)["phase"] == "Succeeded"
    assert status.pod_status(pod(policy="OnFailure"), done, NOW)["phase"] == "Succeeded"
    main = status.pod_status(pod(policy="Never"), done, NOW)["containerStatuses"][0]
    assert main["state"]["terminated"]["reason"] == "Completed"
    failed = status.PodView(sandbox_ready=True)
    failed.containers["main"] = status.ContainerView(current=exited(code=2))
    assert status.pod_status(pod(policy="Never"), failed, NOW)["phase"] == "Failed"
    assert status.pod_status(pod(policy="OnFailure"), failed, NOW)["phase"] == "Running"
    oom = status.PodView(sandbox_ready=True)
    oom.containers["main"] = status.ContainerView(current=exited(code=137,
                                                                 reason="OOMKilled"))
    result = status.pod_status(pod(policy="Never"), oom, NOW)
    assert result["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    ready = [c for c in result["conditions"] if c["type"] == "Ready"][0]
    assert ready["reason"] == "PodCompleted"


def test_init_containers_gate_the_pod():
    view = status.PodView(sandbox_ready=True)
    view.containers["setup"] = status.ContainerView(current=running("i1"))
    result = status.pod_status(pod(init=("setup",)), view, NOW)
    assert result["phase"] == "Pending"
    assert conditions(result)["Initialized"] == "False"
    assert result["initContainerStatuses"][0]["state"]["running"]
    assert result["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ContainerCreating"}}
    view.containers["setup"] = status.ContainerView(current=exited("i1", code=1))
    assert status.pod_status(pod(init=("setup",), policy="Never"), view,
                             NOW)["phase"] == "Failed"
    assert status.pod_status(pod(init=("setup",)), view, NOW)["phase"] == "Pending"
    view.containers["setup"] = status.ContainerView(current=exited("i1", code=0))
    view.containers["main"] = status.ContainerView(current=running(), ready=True,
                                                   started=True)
    result = status.pod_status(pod(init=("setup",)), view, NOW)
    assert result["phase"] == "Running" and conditions(result)["Initialized"] == "True"


def test_image_pull_errors_wait():
    view = status.PodView(sandbox_ready=True)
    view.containers["main"] = status.ContainerView(
        waiting=("ImagePullBackOff", 'Back-off pulling image "nope"'))
    result = status.pod_status(pod(), view, NOW)
    assert result["phase"] == "Pending"
    assert result["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_status_changed_only_when_it_moved():
    view = status.PodView(sandbox_ready=True, pod_ip="10.42.0.5")
    view.containers["main"] = status.ContainerView(current=running(), ready=True,
                                                   started=True)
    first = status.pod_status(pod(), view, NOW)
    again = status.pod_status({**pod(), "status": first}, view, "2026-11-26T10:05:00Z")
    assert not status.changed(first, again)
    view.containers["main"].ready = False
    assert status.changed(first, status.pod_status({**pod(), "status": first}, view, NOW))


def test_qos_class():
    def spec(resources):
        return {"containers": [{"name": "a", "resources": resources}]}
    assert pod_qos_class(spec({})) == "BestEffort"
    assert pod_qos_class(spec({"limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"
    assert pod_qos_class(spec({"requests": {"cpu": "100m"}})) == "Burstable"
    assert pod_qos_class(spec({"requests": {"cpu": "1", "memory": "1Gi"},
                                  "limits": {"cpu": "2", "memory": "1Gi"}})) == "Burstable"


def test_crash_backoff_doubles_to_the_cap_and_resets():
    now = [1000.0]
    backoff = Backoff(10, 300, 600, clock=lambda: now[0])
    key = ("uid", "main")
    assert backoff.remaining(key, since=now[0]) == 0  # the first restart is immediate
    assert backoff.next(key) == 10
    now[0] += 1
    assert backoff.remaining(key, since=now[0]) == 9
    now[0] += 9
    assert backoff.remaining(key, since=now[0]) == 0
    delays = [backoff.next(key)]
    for _ in range(6):
        now[0] += delays[-1]
        delays.append(backoff.next(key))
    assert delays == [20, 40, 80, 160, 300, 300, 300]
    # a container that ran longer than its delay since the last restart restarts at once
    now[0] += 100
    assert backoff.remaining(key, since=now[0] - 1) == 200  # crashed 1 s ago, 300 s delay
    assert backoff.remaining(key, since=now[0] + 400) == 0
    now[0] += 601  # ten minutes without a restart: start over
    assert backoff.remaining(key, since=now[0]) == 0
    assert backoff.next(key) == 10
    backoff.forget("uid")
    assert backoff.delay(key) == 0


def test_probe_threshold():
    liveness = Threshold(True, 1, 3)
    assert not liveness.record(False) and not liveness.record(False)
    assert liveness.record(False) and liveness.result is False
    readiness = Threshold(False, 2, 3)
    assert not readiness.record(True)
    assert readiness.record(True) and readiness.result is True
    assert not readiness.record(False)
    assert readiness.record(True) is False and readiness.result is True


def test_probe_ports_by_name():
    container = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", container) == 8080
    assert resolve_port(80, container) == 80
    assert resolve_port("81", container) == 81


def test_restart_and_pull_policies():
    assert restart_wanted("Always", 0) and restart_wanted("OnFailure", 1)
    assert not restart_wanted("OnFailure", 0) and not restart_wanted("Never", 1)
    assert default_pull_policy("busybox") == "Always"
    assert default_pull_policy("k8py.local/busybox:latest") == "Always"
    assert default_pull_policy("registry:5000/busybox:1.36") == "IfNotPresent"
    assert default_pull_policy("busybox@sha256:abc") == "IfNotPresent"


MEMINFO = """MemTotal:       24598212 kB
MemFree:        10000000 kB
MemAvailable:   20000000 kB
HugePages_Total:       0
"""


def test_capacity_and_allocatable():
    memory = node.parse_meminfo(MEMINFO)
    assert memory["MemTotal"] == 24598212 * 1024 and memory["HugePages_Total"] == 0
    capacity = node.capacity(2, memory["MemTotal"], 100 * 2**30)
    assert capacity["cpu"] == "2" and capacity["pods"] == "110"
    assert capacity["memory"] == "24598212Ki"
    assert capacity["ephemeral-storage"] == f"{100 * 2**20}Ki"
    allocatable = node.allocatable(2, memory["MemTotal"], 100 * 2**30)
    assert allocatable["memory"] == f"{24598212 - 100 * 1024}Ki"
    assert allocatable["ephemeral-storage"] == str(int(100 * 2**30 * 0.9))


def test_arch_labels_and_os_image():
    assert node.arch("x86_64") == "amd64" and node.arch("aarch64") == "arm64"
    assert node.arch("armv7l") == "arm"
    labels = node.node_labels("n1", "arm64", True, (("tier", "edge"),))
    assert labels["kubernetes.io/arch"] == "arm64" and labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/hostname"] == "n1" and labels["tier"] == "edge"
    # the server sets its node-role labels itself: a kubelet may not (NodeRestriction)
    assert "node-role.kubernetes.io/control-plane" not in labels
    assert node.os_image('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n') == \
        "Debian GNU/Linux 12 (bookworm)"


def test_pressure_conditions():
    calm = node.HostUsage(8 * 2**30, 100 * 2**30, 50 * 2**30, 300, 4194304)
    result = node.conditions(calm, None)
    assert {k: v[0] for k, v in result.items()} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False",
        "Ready": "True"}
    tight = node.HostUsage(50 * 2**20, 100 * 2**30, 5 * 2**30, 32000, 32768)
    result = node.conditions(tight, "container runtime is down")
    assert result["MemoryPressure"][:2] == ("True", "KubeletHasInsufficientMemory")
    assert result["DiskPressure"][:2] == ("True", "KubeletHasDiskPressure")
    assert result["PIDPressure"][:2] == ("True", "KubeletHasInsufficientPID")
    assert result["Ready"] == ("False", "KubeletNotReady", "container runtime is down")
    merged = node.merge_conditions(
        [{"type": "Ready", "status": "False", "lastTransitionTime": "old"},
         {"type": "DiskPressure", "status": "True", "lastTransitionTime": "old"}],
        node.conditions(calm, None), NOW)
    by_type = {c["type"]: c for c in merged}
    assert by_type["Ready"]["lastTransitionTime"] == NOW
    assert by_type["DiskPressure"]["lastTransitionTime"] == NOW
    assert all(c["lastHeartbeatTime"] == NOW for c in merged)
