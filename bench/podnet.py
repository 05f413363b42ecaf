"""Pod network benchmark. Needs root, containerd, the CNI plugins and iperf3.

    .venv/bin/python bench/podnet.py [--seconds 5]

For each backend (vxlan, host-gw) a `k8py lab` with two agents comes up; a pod on agent-1
and a pod on agent-2 (busybox `sleep`) give the namespaces, and iperf3 and a small Python
connection loop run in them from the host (`nsenter --net=/proc/<pid>/ns/net`, the pods'
images need neither). Figures, all in one run:
1. pod → pod across nodes: TCP throughput (iperf3, SECONDS s) and new TCP connections per
   second (connect + close, 3 s);
2. pod → the other pod through a ClusterIP Service: the same two figures;
3. the floor: the same between the two nodes' own namespaces on the lab bridge (no overlay,
   no proxy).
Each lab is taken down at the end (`k8py lab down`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from k8py.agent import cgroups  # noqa: E402
from k8py.lab import Lab  # noqa: E402

KUBECTL = next((p for p in ("/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
                            shutil.which("kubectl") or "") if p and os.path.exists(p)), "kubectl")
CONNECT_LOOP = """
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.create_connection((host, port), timeout=2)
    s.close()
    count += 1
print(count / seconds)
"""
LISTENER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(512)
while True:
    conn, _ = s.accept()
    conn.close()
"""


def kubectl(lab: Lab, *args: str, input: str | None = None) -> str:
    done = subprocess.run([KUBECTL, "--kubeconfig", lab.kubeconfig, *args], input=input,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def pod_pid(uid: str) -> int:
    """A process of the pod (one in its cgroups)."""
    pids = cgroups.pod_processes(uid)
    if not pids:
        raise SystemExit(f"no process of pod {uid}")
    return min(pids)


def _nsenter(pid_or_ns: int | str) -> list[str]:
    """nsenter into a process's network namespace (a pid) or a named one."""
    where = f"/proc/{pid_or_ns}/ns/net" if isinstance(pid_or_ns, int) else \
        f"/run/netns/{pid_or_ns}"
    return ["nsenter", f"--net={where}"]


def in_net(pid_or_ns: int | str, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*_nsenter(pid_or_ns), *command], capture_output=True, text=True,
                          **kwargs)


def spawn_in_net(pid_or_ns: int | str, *command: str) -> subprocess.Popen:
    return subprocess.Popen([*_nsenter(pid_or_ns), *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure(client, server_ip: str, seconds: int) -> tuple[float, float]:
    """(Gbit/s, connections/s) from `client` (pid or netns) to `server_ip`."""
    done = in_net(client, "iperf3", "-c", server_ip, "-t", str(seconds), "-J", timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"iperf3 to {server_ip}: {done.stderr or done.stdout[-300:]}")
    bits = json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]
    rate = in_net(client, sys.executable, "-c", CONNECT_LOOP, server_ip, "7000", "3",
                  timeout=60)
    return bits / 1e9, float(rate.stdout.strip() or 0)


def run_backend(backend: str, seconds: int) -> None:
    lab = Lab(f"podnet{uuid.uuid4().hex[:6]}")
    lab.up(agents=2, backend=backend, progress=lambda _line: None)
    servers = []
    try:
        manifests = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": name, "labels": {"app": name}},
             "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "main", "image": "k8py.local/busybox:latest",
                                      "imagePullPolicy": "IfNotPresent",
                                      "command": ["sleep", "3600"]}]}}
            for name, node in (("server", "agent-1"), ("client", "agent-2"))] + [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server"},
             "spec": {"selector": {"app": "server"},
                      "ports": [{"name": "iperf", "port": 5201},
                                {"name": "connect", "port": 7000}]}}]}
        kubectl(lab, "apply", "-f", "-", input=json.dumps(manifests))
        deadline = time.monotonic() + 90
        while True:
            pods = json.loads(kubectl(lab, "get", "pods", "-o", "json"))["items"]
            if len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark pods did not start")
            time.sleep(0.5)
        by_name = {p["metadata"]["name"]: p for p in pods}
        server_pid = pod_pid(by_name["server"]["metadata"]["uid"])
        client_pid = pod_pid(by_name["client"]["metadata"]["uid"])
        server_ip = by_name["server"]["status"]["podIP"]
        cluster_ip = json.loads(kubectl(lab, "get", "service", "server", "-o", "json"))[
            "spec"]["clusterIP"]
        for where in (server_pid, lab.node("agent-1").netns):
            servers.append(spawn_in_net(where, "iperf3", "-s"))
            servers.append(spawn_in_net(where, sys.executable, "-c", LISTENER))
        time.sleep(1.0)
        pod_gbps, pod_rate = measure(client_pid, server_ip, seconds)
        svc_gbps, svc_rate = measure(client_pid, cluster_ip, seconds)
        node_gbps, node_rate = measure(lab.node("agent-2").netns, lab.node("agent-1").ip,
                                       seconds)
        print(f"  {backend:8} pod -> pod across nodes: {pod_gbps:6.2f} Gbit/s, "
              f"{pod_rate:7.0f} connections/s")
        print(f"  {backend:8} pod -> ClusterIP -> pod:   {svc_gbps:6.2f} Gbit/s, "
              f"{svc_rate:7.0f} connections/s")
        print(f"  {backend:8} floor, node -> node (bridge): {node_gbps:6.2f} Gbit/s, "
              f"{node_rate:7.0f} connections/s")
    finally:
        for server in servers:
            server.kill()
            server.wait()
        lab.down(progress=lambda _line: None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/podnet.py needs root")
    if shutil.which("iperf3") is None:
        raise SystemExit("bench/podnet.py needs iperf3 (apt-get install iperf3; ./install.sh "
                         "installs it)")
    print("Pod network benchmark (k8py lab, 2 agents, pods placed on different nodes)")
    for backend in ("vxlan", "host-gw"):
        run_backend(backend, args.seconds)


if __name__ == "__main__":
    main()
