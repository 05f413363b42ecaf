"""One `k8py lab` for the e2e tests that need several real nodes (a server and two agents,
each in its own network namespace with its own containerd): the session's `lab` fixture
(tests/e2e/conftest.py) brings it up once for every module that uses it, and takes it down at
the end, checking that the host is as it found it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

from k8py.agent import cgroups
from tests.conftest import wait_for
from tests.e2e.conftest import find_kubectl

UPSTREAM = "127.0.0.53"  # the nodes' resolver: each node's own loopback (tests run one)
IMAGE = "k8py.local/busybox:latest"
ECHO = "mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www"


def host_state() -> dict[str, str]:
    """What the lab must give back: links, namespaces, routes, nftables tables, mounts, pod
    cgroups (in any hierarchy), processes."""
    def run(*command):
        return subprocess.run(command, capture_output=True, text=True).stdout
    processes = sorted(pid for pid in os.listdir("/proc") if pid.isdigit()
                       and "k8py-lab" in _cmdline(pid))
    return {"links": run("ip", "-o", "link", "show"), "netns": run("ip", "netns", "list"),
            "routes": run("ip", "route", "show"), "nft": run("nft", "list", "tables"),
            "mounts": "".join(line for line in open("/proc/self/mounts")
                              if "k8py-lab" in line),
            "pod cgroups": " ".join(sorted(cgroups.pod_cgroup_uids())),
            "processes": " ".join(processes)}


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class LabCluster:
    def __init__(self, name: str, home: str):
        self.name, self.home = name, home
        self.kubeconfig = f"/var/lib/k8py-lab/{name}/kubeconfig"

    def k8py(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "k8py", "lab", *args, "--name", self.name]
                              if args[0] != "exec" else
                              [sys.executable, "-m", "k8py", "lab", "exec", "--name", self.name,
                               *args[1:]], capture_output=True, text=True, timeout=300)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def node_status(self, name: str) -> list[str]:
        """`k8py lab status`'s row for the node: name, role, address, running (yes/no)."""
        for line in self.k8py("status").stdout.splitlines():
            if line.startswith(name + " "):
                return line.split()
        raise AssertionError(f"no node {name} in the lab's status")

    def node_ip(self, name: str) -> str:
        return self.node_status(name)[2]

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([find_kubectl(), "--kubeconfig", self.kubeconfig, "--cache-dir",
                               os.path.join(self.home, "cache"), *args], input=input,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HOME": self.home})
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def pod(self, name: str, node: str, command: str, labels: dict | None = None) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", command]}]}}))

    def running(self, *names: str) -> dict[str, str]:
        """Wait until the pods run; their IPs."""
        def check():
            pods = json.loads(self.kubectl("get", "pods", "-o", "json").stdout)["items"]
            ips = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods
                   if p["status"].get("phase") == "Running"}
            return all(ips.get(n) for n in names) and ips
        return wait_for(check, timeout=90, interval=0.5, what=f"pods {names} running")

    def fetch(self, pod: str, ip: str, port: int = 8080) -> str:
        done = self.kubectl("exec", pod, "--", "sh", "-c",
                            f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}",
                            check=False)
        return done.stdout.replace("\r", "").split("\n\n", 1)[-1].strip() \
            if done.returncode == 0 else ""


def running_lab(tmp_path_factory, *up_flags: str) -> Iterator[LabCluster]:
    """A lab of a server and two agents (or what `up_flags` of `k8py lab up` ask), up for as
    long as the generator runs; on its end, the host is checked to be as before."""
    before = host_state()
    cluster = LabCluster(f"e2e{uuid.uuid4().hex[:6]}", str(tmp_path_factory.mktemp("lab")))
    # the nodes' upstream: a resolver the test runs on each node's own loopback, never a
    # real outside one (`test_names_outside_the_cluster_go_upstream`)
    resolv = os.path.join(cluster.home, "resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"nameserver {UPSTREAM}\n")
    try:
        up = cluster.k8py("up", *(up_flags or ("--agents", "2")), "--resolv-conf", resolv)
        assert up.stdout.strip() == cluster.kubeconfig
        yield cluster
    finally:
        cluster.k8py("down", check=False)
    after = host_state()
    # pods and processes of others (the session's lab, when this is a module's own) may come
    # and go meanwhile: none of ours may stay
    for key in ("pod cgroups", "processes"):
        left = set(after.pop(key).split()) - set(before.pop(key).split())
        assert not left, (key, left)
    ours = (f"/k8py-lab/{cluster.name}/", f"k8py-lab-{cluster.name}-")
    left = [line for line in after.pop("mounts").splitlines()
            if any(mark in line for mark in ours)]
    before.pop("mounts")
    assert not left, ("mounts", left)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


