"""`kubectl top` on the shared lab against what the kernel says: a pod burning CPU under a
200m limit and holding 48 MiB in /dev/shm (tmpfs: charged to its cgroup, never reclaimable
as inactive file pages), its figures compared with its own cgroup's files (cpu.stat's
usage over a window; memory usage minus inactive file pages, the working set; cgroup v1
or v2), the node's
with /proc of the host its network namespace shares."""

from __future__ import annotations

import json
import os
import time

from k8py.agent import cgroups
from tests.conftest import wait_for
from tests.e2e.labcluster import IMAGE

POD = "metrics-burner"
LIMIT_MILLICORES = 200
HELD_MIB = 48


def millicores(text: str) -> float:
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def mebibytes(text: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(text[:-2]) * units[text[-2:]] if text[-2:] in units else float(text) / 2**20


def pod_cgroup(lab, controller: str) -> str:
    """The pod's cgroup directory on this host (cgroup v1: the controller's hierarchy; v2:
    the unified one). The pod's cgroup holds its container and the pause process, which
    uses next to nothing."""
    uid = json.loads(lab.kubectl("get", "pod", POD, "-o", "json").stdout)["metadata"]["uid"]
    parent = cgroups.pod_cgroup_parent(uid).lstrip("/")
    v1 = os.path.join(cgroups.CGROUP_ROOT, controller, parent)
    return v1 if os.path.isdir(v1) else os.path.join(cgroups.CGROUP_ROOT, parent)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def working_set_mib(lab) -> float:
    """usage minus inactive file pages, as cadvisor and containerd compute it."""
    directory = pod_cgroup(lab, "memory")
    stat = dict(line.split() for line in read(os.path.join(directory, "memory.stat"))
                .splitlines())
    if os.path.exists(os.path.join(directory, "memory.current")):  # v2
        return (int(read(os.path.join(directory, "memory.current")))
                - int(stat["inactive_file"])) / 2**20
    return (int(read(os.path.join(directory, "memory.usage_in_bytes")))
            - int(stat["total_inactive_file"])) / 2**20


def cpu_seconds(lab) -> float:
    directory = pod_cgroup(lab, "cpuacct")
    if os.path.exists(os.path.join(directory, "cpu.stat")) and not os.path.exists(
            os.path.join(directory, "cpuacct.usage")):  # v2: usage_usec
        stat = dict(line.split() for line in read(os.path.join(directory, "cpu.stat"))
                    .splitlines())
        return int(stat["usage_usec"]) / 1e6
    return int(read(os.path.join(directory, "cpuacct.usage"))) / 1e9


def test_kubectl_top_agrees_with_the_pods_cgroup(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
        "spec": {"nodeName": "agent-1", "terminationGracePeriodSeconds": 1,
                 "containers": [{
                     "name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", f"dd if=/dev/zero of=/dev/shm/held bs=1M "
                                 f"count={HELD_MIB} && while :; do :; done"],
                     "resources": {"limits": {"cpu": f"{LIMIT_MILLICORES}m",
                                              "memory": "128Mi"}}}]}}))
    try:
        lab.running(POD)

        def top_pod():
            done = lab.kubectl("top", "pod", POD, "--no-headers", check=False)
            return done.returncode == 0 and done.stdout.split()
        # two scrapes 15 s apart, the first after the pod started
        wait_for(top_pod, timeout=90, interval=2, what="metrics of the pod")

        # the kernel's rate over a window like metrics-server's, then top's figures
        start, started = cpu_seconds(lab), time.monotonic()
        time.sleep(15)  # a measurement window, not a wait for a condition
        kernel_millicores = (cpu_seconds(lab) - start) * 1000 / (time.monotonic() - started)
        _, cpu, memory = top_pod()
        kernel_mib = working_set_mib(lab)
        assert abs(millicores(cpu) - kernel_millicores) <= 0.2 * kernel_millicores, \
            (cpu, kernel_millicores)
        assert abs(mebibytes(memory) - kernel_mib) <= 0.2 * kernel_mib, (memory, kernel_mib)
        assert kernel_mib >= HELD_MIB and kernel_millicores >= LIMIT_MILLICORES * 0.5

        # the node: its usage holds the pod's; its working set is the host's
        nodes = {row.split()[0]: row.split() for row in
                 lab.kubectl("top", "nodes", "--no-headers").stdout.splitlines()}
        assert set(nodes) == {"server", "agent-1", "agent-2"}
        _, node_cpu, _, node_memory, _ = nodes["agent-1"]
        assert millicores(node_cpu) >= 0.8 * millicores(cpu)
        meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
                   for line in open("/proc/meminfo")}
        host_mib = (meminfo["MemTotal"] - meminfo["MemFree"] - meminfo["Inactive(file)"]) / 2**20
        assert abs(mebibytes(node_memory) - host_mib) <= 0.2 * host_mib, (node_memory, host_mib)
    finally:
        lab.kubectl("delete", "pod", POD, "--wait=true", check=False)
