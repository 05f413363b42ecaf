"""`k8py lab` end to end: a server and two agents, each in its own network namespace with its
own containerd, joined with the token; pods reaching pods on other nodes over VXLAN; a
ClusterIP Service balanced over backends on every node, from every node's pods; a NodePort
answering on every node's address from the host; and `k8py lab down` leaving the host as it
found it. One lab serves the whole module (it takes a few seconds to come up)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import find_kubectl

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]

IMAGE = "k8py.local/busybox:latest"
ECHO = "mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www"


def host_state() -> dict[str, str]:
    """What the lab must give back: links, namespaces, routes, nftables tables, mounts."""
    def run(*command):
        return subprocess.run(command, capture_output=True, text=True).stdout
    return {"links": run("ip", "-o", "link", "show"), "netns": run("ip", "netns", "list"),
            "routes": run("ip", "route", "show"), "nft": run("nft", "list", "tables"),
            "mounts": "".join(line for line in open("/proc/self/mounts")
                              if "k8py-lab" in line)}


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    before = host_state()
    cluster = LabCluster(f"e2e{uuid.uuid4().hex[:6]}", str(tmp_path_factory.mktemp("lab")))
    try:
        up = cluster.k8py("up", "--agents", "2")
        assert up.stdout.strip() == cluster.kubeconfig
        yield cluster
    finally:
        cluster.k8py("down", check=False)
    after = host_state()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def test_all_nodes_ready_with_their_own_addresses(lab):
    nodes = json.loads(lab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["agent-1", "agent-2", "server"]
    for node in nodes:
        assert any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node["status"]["conditions"])
        notes = node["metadata"]["annotations"]
        assert notes["flannel.alpha.coreos.com/backend-type"] == "vxlan"
        assert json.loads(notes["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
    status = lab.k8py("status").stdout
    assert "agent-1" in status and "yes" in status


def test_pods_reach_pods_on_other_nodes(lab):
    lab.pod("web-a1", "agent-1", ECHO)
    lab.pod("probe-a2", "agent-2", "sleep 3600")
    ips = lab.running("web-a1", "probe-a2")
    assert wait_for(lambda: lab.fetch("probe-a2", ips["web-a1"]) == "web-a1", timeout=30,
                    interval=0.5, what="agent-2's pod reaching agent-1's pod")
    # the route the agent keeps on the other node, through flannel.1
    routes = lab.k8py("exec", "agent-2", "--", "ip", "route").stdout
    assert "flannel.1" in routes


def test_cluster_ip_balances_over_every_node_from_every_node(lab):
    for node in ("server", "agent-1", "agent-2"):
        lab.pod(f"echo-{node}", node, ECHO, {"app": "echo"})
        lab.pod(f"client-{node}", node, "sleep 3600")
    lab.running(*[f"echo-{n}" for n in ("server", "agent-1", "agent-2")],
                *[f"client-{n}" for n in ("server", "agent-1", "agent-2")])
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"type": "NodePort", "selector": {"app": "echo"},
                 "ports": [{"port": 80, "targetPort": 8080}]}}))
    service = json.loads(lab.kubectl("get", "service", "echo", "-o", "json").stdout)
    cluster_ip = service["spec"]["clusterIP"]
    wanted = {"echo-server", "echo-agent-1", "echo-agent-2"}
    for node in ("server", "agent-1", "agent-2"):
        seen: set[str] = set()

        def all_backends(node=node, seen=seen):
            for _ in range(10):
                answer = lab.fetch(f"client-{node}", cluster_ip, 80)
                if answer:
                    seen.add(answer)
            return seen >= wanted
        wait_for(all_backends, timeout=60, interval=0.2,
                 what=f"every backend from the pods of {node}")
        assert seen == wanted  # nothing but the backends answered

    # the NodePort on every node's address, from the host
    node_port = service["spec"]["ports"][0]["nodePort"]
    nodes = json.loads(lab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        address = next(a["address"] for a in node["status"]["addresses"]
                       if a["type"] == "InternalIP")

        def answers(address=address):
            try:
                with socket.create_connection((address, node_port), timeout=3) as conn:
                    conn.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := conn.recv(4096):
                        data += chunk
            except OSError:
                return False
            return data.split(b"\r\n\r\n", 1)[-1].strip().decode() in wanted
        wait_for(answers, timeout=30, interval=0.5,
                 what=f"the NodePort on {node['metadata']['name']} ({address})")


def http_from_host(address: str, port: int) -> str:
    try:
        with socket.create_connection((address, port), timeout=3) as conn:
            conn.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    except OSError:
        return ""
    return data.split(b"\r\n\r\n", 1)[-1].strip().decode(errors="replace")


def test_load_balancer_answers_on_the_nodes_addresses(lab):
    # the echo pods of the test before serve this one too
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-lb"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "echo"},
                 "ports": [{"port": 8181, "targetPort": 8080}]}}))

    def ingress():
        svc = json.loads(lab.kubectl("get", "service", "echo-lb", "-o", "json").stdout)
        return [i["ip"] for i in (svc["status"].get("loadBalancer") or {}).get("ingress") or []]
    addresses = wait_for(ingress, timeout=30, what="LoadBalancer ingress addresses")
    assert len(addresses) == 3
    shown = lab.kubectl("get", "service", "echo-lb").stdout
    assert addresses[0] in shown and "<pending>" not in shown
    for address in addresses:
        wait_for(lambda a=address: http_from_host(a, 8181).startswith("echo-"), timeout=30,
                 interval=0.5, what=f"the LoadBalancer on {address}")


def _join(lab: LabCluster, token: str, node_name: str, data_dir: str
          ) -> subprocess.CompletedProcess:
    """`k8py agent` in agent-1's namespace, joining as `node_name`; it must stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "k8py", "lab", "exec", "--name", lab.name, "agent-1", "--",
         sys.executable, "-m", "k8py", "agent", "--server",
         f"https://{_server_ip(lab)}:6443", "--token", token, "--node-name", node_name,
         "--data-dir", data_dir],
        capture_output=True, text=True, timeout=60)


def _server_ip(lab: LabCluster) -> str:
    for line in lab.k8py("status").stdout.splitlines():
        if line.startswith("server"):
            return line.split()[2]
    raise AssertionError("no server in the lab's status")


def test_tokens_join_and_a_reused_node_name_or_a_tampered_ca_is_refused(lab, tmp_path):
    created = subprocess.run([sys.executable, "-m", "k8py", "token", "create", "--kubeconfig",
                              lab.kubeconfig, "--ttl", "1h", "--description", "e2e"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("K10") and "::" in token and "." in token.rsplit("::", 1)[1]
    listed = subprocess.run([sys.executable, "-m", "k8py", "token", "list", "--kubeconfig",
                             lab.kubeconfig], capture_output=True, text=True, timeout=60)
    token_id = token.rsplit("::", 1)[1].split(".")[0]
    assert token_id in listed.stdout and "e2e" in listed.stdout

    # another host claiming agent-1's name, with the new token: refused, in one line
    claimed = _join(lab, token, "agent-1", str(tmp_path / "impostor"))
    assert claimed.returncode != 0
    assert "node password rejected" in claimed.stderr, claimed.stderr
    assert claimed.stderr.strip().count("\n") == 0, claimed.stderr

    # a token whose CA hash was changed: refused before anything is sent
    tampered = "K10" + ("0" * 64) + token[3 + 64:]
    refused = _join(lab, tampered, "agent-9", str(tmp_path / "tampered"))
    assert refused.returncode != 0 and "CA does not match" in refused.stderr, refused.stderr

    # a deleted token no longer joins
    deleted = subprocess.run([sys.executable, "-m", "k8py", "token", "delete", "--kubeconfig",
                              lab.kubeconfig, token_id], capture_output=True, text=True,
                             timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    gone = _join(lab, token, "agent-9", str(tmp_path / "late"))
    assert gone.returncode != 0 and "refused the token" in gone.stderr, gone.stderr
