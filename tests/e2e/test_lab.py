"""`k8py lab` end to end: a server and two agents, each in its own network namespace with its
own containerd, joined with the token; pods reaching pods on other nodes over VXLAN; a
ClusterIP Service balanced over backends on every node, from every node's pods; a NodePort
answering on every node's address from the host; and `k8py lab down` leaving the host as it
found it. One lab (the session's `lab` fixture) serves this module and the others that need
one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import wait_for
from tests.e2e.labcluster import ECHO, IMAGE, UPSTREAM, LabCluster

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]

# prints the address of whoever connects to TCP 7777
PEER_PRINTER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen()
conn, peer = s.accept()
print(peer[0], flush=True)
conn.close()
"""
# answers every DNS question on UDP 5353 with A 10.9.9.9
DNS_RESPONDER = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    query, peer = s.recvfrom(512)
    end = query.index(b"\\0", 12) + 5
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([10, 9, 9, 9])
    s.sendto(header + query[12:end] + answer, peer)
"""


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


def reach_across(lab: LabCluster, web: str, web_node: str, probe: str, probe_node: str
                 ) -> str:
    """A pod on `probe_node` fetching from one on `web_node` by IP; the probe node's
    routes."""
    lab.pod(web, web_node, ECHO)
    lab.pod(probe, probe_node, "sleep 3600")
    ips = lab.running(web, probe)
    assert wait_for(lambda: lab.fetch(probe, ips[web]) == web, timeout=30, interval=0.5,
                    what=f"{probe_node}'s pod reaching {web_node}'s pod")
    return lab.k8py("exec", probe_node, "--", "ip", "route").stdout


def test_pods_reach_pods_on_other_nodes(lab):
    routes = reach_across(lab, "web-a1", "agent-1", "probe-a2", "agent-2")
    assert "flannel.1" in routes  # the route the agent keeps, through the VXLAN device


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
    for node in ("server", "agent-1", "agent-2"):  # the nodes themselves, too
        def from_the_node(node=node):
            done = lab.k8py("exec", node, "--", "busybox", "sh", "-c",
                            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | "
                            f"busybox nc -w 3 {cluster_ip} 80", check=False)
            return done.stdout.replace("\r", "").split("\n\n", 1)[-1].strip() in wanted
        wait_for(from_the_node, timeout=30, interval=0.5, what=f"the ClusterIP from {node}")
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
            return http_from_host(address, node_port) in wanted
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
         f"https://{lab.node_ip('server')}:6443", "--token", token, "--node-name", node_name,
         "--data-dir", data_dir],
        capture_output=True, text=True, timeout=60)


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


def _service(lab: LabCluster, name: str, spec: dict) -> dict:
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}))
    return json.loads(lab.kubectl("get", "service", name, "-o", "json").stdout)


def test_affinity_hairpin_udp_and_egress(lab):
    """Uses the echo pods (one per node) and clients of the tests before."""
    sticky = _service(lab, "echo-sticky", {"selector": {"app": "echo"},
                                           "sessionAffinity": "ClientIP",
                                           "ports": [{"port": 80, "targetPort": 8080}]})
    ip = sticky["spec"]["clusterIP"]
    first = wait_for(lambda: lab.fetch("client-agent-1", ip, 80), timeout=30,
                     what="the sticky Service answering")
    assert {lab.fetch("client-agent-1", ip, 80) for _ in range(8)} == {first}

    # a pod reaching itself through its own Service (hairpin)
    lab.pod("self-web", "agent-2", ECHO, {"app": "self"})
    lab.running("self-web")
    own = _service(lab, "self", {"selector": {"app": "self"},
                                 "ports": [{"port": 80, "targetPort": 8080}]})
    wait_for(lambda: lab.fetch("self-web", own["spec"]["clusterIP"], 80) == "self-web",
             timeout=30, interval=0.5, what="the pod through its own Service")

    # UDP: the pods' busybox has no UDP server, so the endpoint is a tiny DNS responder in
    # agent-1's namespace (a Service without a selector, with its own EndpointSlice), asked
    # with nslookup from agent-2's client through the Service
    responder = subprocess.Popen(
        [sys.executable, "-m", "k8py", "lab", "exec", "--name", lab.name, "agent-1", "--",
         sys.executable, "-c", DNS_RESPONDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        udp = _service(lab, "udp", {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]})
        lab.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "udp-manual",
                         "labels": {"kubernetes.io/service-name": "udp"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": [lab.node_ip("agent-1")],
                           "conditions": {"ready": True}}]}))

        def udp_answered():
            done = lab.kubectl("exec", "client-agent-2", "--", "nslookup", "answer.lab",
                               udp["spec"]["clusterIP"], check=False)
            return "10.9.9.9" in done.stdout
        wait_for(udp_answered, timeout=40, interval=1, what="a UDP answer through the Service")
    finally:
        responder.kill()
        responder.wait()

    # egress: a pod's traffic leaving the cluster CIDR carries its node's address (a
    # listener on the lab network, in agent-2's own namespace, outside the pod network)
    listener = subprocess.Popen(
        [sys.executable, "-m", "k8py", "lab", "exec", "--name", lab.name, "agent-2", "--",
         sys.executable, "-c", PEER_PRINTER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        agent2 = lab.node_ip("agent-2")

        def reached():
            done = lab.kubectl("exec", "client-agent-1", "--", "sh", "-c",
                               f"echo x | nc -w 2 {agent2} 7777", check=False)
            return done.returncode == 0
        wait_for(reached, timeout=20, interval=0.5, what="the listener outside the cluster")
        peer = listener.stdout.readline().strip()
    finally:
        listener.kill()
        listener.wait()
    assert peer == lab.node_ip("agent-1")  # the node's address, not the pod's


def test_external_traffic_policy_local(lab):
    lab.pod("local-web", "agent-1", ECHO, {"app": "local"})
    lab.running("local-web")
    svc = _service(lab, "local", {"type": "NodePort", "externalTrafficPolicy": "Local",
                                  "selector": {"app": "local"},
                                  "ports": [{"port": 80, "targetPort": 8080}]})
    node_port = svc["spec"]["ports"][0]["nodePort"]
    agent1, agent2 = lab.node_ip("agent-1"), lab.node_ip("agent-2")
    wait_for(lambda: http_from_host(agent1, node_port) == "local-web", timeout=30,
             interval=0.5, what="the NodePort on the node with the endpoint")
    # no local endpoint on agent-2: no answer there from outside the cluster
    assert http_from_host(agent2, node_port) == ""


def test_cluster_dns_from_every_node(lab):
    """busybox's nslookup, asking the pod's nameserver (the cluster DNS address, answered by
    the node's own agent): a Service, a name that does not exist, kube-dns itself."""
    dns_svc = json.loads(lab.kubectl("get", "service", "kube-dns", "-n", "kube-system", "-o",
                                     "json").stdout)
    assert dns_svc["spec"]["clusterIP"] == "10.43.0.10"
    echo_ip = json.loads(lab.kubectl("get", "service", "echo", "-o", "json").stdout)[
        "spec"]["clusterIP"]
    for node in ("server", "agent-1", "agent-2"):
        def resolved(node=node):
            done = lab.kubectl("exec", f"client-{node}", "--", "nslookup",
                               "echo.default.svc.cluster.local", check=False)
            return echo_ip in done.stdout and done
        done = wait_for(resolved, timeout=30, interval=0.5, what=f"DNS from {node}'s pods")
        assert "10.43.0.10" in done.stdout  # the answer came from the cluster DNS address
        missing = lab.kubectl("exec", f"client-{node}", "--", "nslookup",
                              "nothing.default.svc.cluster.local", check=False)
        assert missing.returncode != 0 and "NXDOMAIN" in missing.stdout + missing.stderr


def test_cluster_dns_records(lab):
    """Headless Services (endpoint addresses and hostname records), SRV, PTR, ExternalName,
    pod records, NODATA for AAAA; a deleted Service stops resolving within the TTL."""
    def nslookup(*args: str) -> subprocess.CompletedProcess:
        return lab.kubectl("exec", "client-agent-2", "--", "nslookup", *args, check=False)

    lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-headless"},
         "spec": {"clusterIP": "None", "selector": {"app": "echo"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
         "spec": {"type": "ExternalName", "externalName": "example.invalid"}}]}))
    pods = json.loads(lab.kubectl("get", "pods", "-l", "app=echo", "-o", "json").stdout)
    ips = sorted(p["status"]["podIP"] for p in pods["items"])
    echo = json.loads(lab.kubectl("get", "service", "echo", "-o", "json").stdout)

    def headless():
        out = nslookup("echo-headless.default.svc.cluster.local").stdout
        return all(ip in out for ip in ips)
    wait_for(headless, timeout=30, interval=0.5, what="the headless Service's endpoints")
    srv = nslookup("-type=SRV", "_http._tcp.echo-headless.default.svc.cluster.local").stdout
    assert "port = 80" in srv or " 80 " in srv, srv
    ptr = nslookup(echo["spec"]["clusterIP"]).stdout
    assert "echo.default.svc.cluster.local" in ptr, ptr
    cname = nslookup("-type=CNAME", "outside.default.svc.cluster.local").stdout
    assert "example.invalid" in cname, cname
    pod_record = nslookup(ips[0].replace(".", "-") + ".default.pod.cluster.local").stdout
    assert ips[0] in pod_record, pod_record
    aaaa = nslookup("-type=AAAA", "echo.default.svc.cluster.local")
    assert "NXDOMAIN" not in aaaa.stdout + aaaa.stderr  # the name exists, without AAAA
    lab.kubectl("delete", "service", "outside")
    wait_for(lambda: "NXDOMAIN" in "".join(
        (lambda done: (done.stdout, done.stderr))(
            nslookup("-type=CNAME", "outside.default.svc.cluster.local"))),
        timeout=15, interval=0.5, what="the deleted Service gone from DNS")


def test_statefulset_hostnames_and_connections_by_name(lab):
    """A StatefulSet's pods answer at `<pod>.<service>` (their hostname records); a new
    Service is reached by its short name (the pod's search path) from every node's pods,
    and stops resolving once deleted."""
    lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"clusterIP": "None", "selector": {"app": "web-sts"},
                  "ports": [{"name": "http", "port": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
         "spec": {"serviceName": "web", "replicas": 2,
                  "selector": {"matchLabels": {"app": "web-sts"}},
                  "template": {"metadata": {"labels": {"app": "web-sts"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "web", "image": IMAGE,
                                      "imagePullPolicy": "IfNotPresent",
                                      "command": ["sh", "-c", ECHO]}]}}}}]}))
    ips = lab.running("web-0", "web-1")

    def by_hostname():
        out = lab.kubectl("exec", "client-agent-1", "--", "nslookup",
                          "web-1.web.default.svc.cluster.local", check=False).stdout
        return ips["web-1"] in out and ips["web-0"] not in out
    wait_for(by_hostname, timeout=30, interval=0.5, what="web-1's hostname record")
    assert lab.fetch("client-agent-2", "web-0.web", 8080) == "web-0"

    _service(lab, "by-name", {"selector": {"app": "echo"},
                              "ports": [{"port": 80, "targetPort": 8080}]})
    for node in ("server", "agent-1", "agent-2"):
        wait_for(lambda node=node: lab.fetch(f"client-{node}", "by-name", 80).startswith(
            "echo-"), timeout=30, interval=0.5, what=f"by-name from {node}'s pods")
    lab.kubectl("delete", "service", "by-name")

    def gone():
        done = lab.kubectl("exec", "client-server", "--", "nslookup",
                           "by-name.default.svc.cluster.local", check=False)
        return "NXDOMAIN" in done.stdout + done.stderr
    wait_for(gone, timeout=15, interval=0.5, what="the deleted Service's name gone")


def test_names_outside_the_cluster_go_upstream(lab):
    """agent-2's DNS forwards what is not the cluster's to the lab's upstream: a responder
    the test runs on agent-2's own loopback (127.0.0.53:53), answering 10.9.9.9."""
    responder = subprocess.Popen(
        [sys.executable, "-m", "k8py", "lab", "exec", "--name", lab.name, "agent-2", "--",
         sys.executable, "-c", DNS_RESPONDER.replace('("0.0.0.0", 5353)',
                                                     f'("{UPSTREAM}", 53)')],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def answered():
            done = lab.kubectl("exec", "client-agent-2", "--", "nslookup",
                               "www.example.test", check=False)
            return "10.9.9.9" in done.stdout
        wait_for(answered, timeout=30, interval=1, what="an outside name through upstream")
    finally:
        responder.kill()
        responder.wait()


def test_a_removed_backend_gets_no_new_connections(lab):
    """The echo Service loses echo-agent-2 (its pod deleted, as a scale-down does): once its
    EndpointSlice says so, nothing reaches it any more."""
    ip = json.loads(lab.kubectl("get", "service", "echo", "-o", "json").stdout)[
        "spec"]["clusterIP"]
    lab.kubectl("delete", "pod", "echo-agent-2", "--wait=false")

    def slice_without_it():
        slices = json.loads(lab.kubectl("get", "endpointslices", "-l",
                                        "kubernetes.io/service-name=echo", "-o",
                                        "json").stdout)["items"]
        return all(e.get("targetRef", {}).get("name") != "echo-agent-2"
                   or e.get("conditions", {}).get("ready") is False
                   for item in slices for e in item.get("endpoints") or [])
    wait_for(slice_without_it, timeout=30, interval=0.2, what="echo-agent-2 out of the slice")
    time.sleep(0.5)  # the proxies' debounce
    answers = {lab.fetch("client-server", ip, 80) for _ in range(20)}
    assert "echo-agent-2" not in answers and answers & {"echo-server", "echo-agent-1"}


def test_service_traffic_survives_an_agent_crash_and_restart(lab):
    """The rules are the kernel's: with agent-1's agent killed, its NodePort still answers
    from the host, through agent-1's own table (pods and containerd stay); restarted, the
    agent takes over its pods and the traffic never stopped."""
    from k8py.lab import Lab

    svc = json.loads(lab.kubectl("get", "service", "echo", "-o", "json").stdout)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    address = lab.node_ip("agent-1")
    state = json.load(open(f"/var/lib/k8py-lab/{lab.name}/lab.json"))
    agent = next(n for n in state["nodes"] if n["name"] == "agent-1")
    os.kill(agent["pid"], 9)
    for _ in range(10):
        assert http_from_host(address, node_port).startswith("echo-")
    Lab(lab.name).restart("agent-1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # answering all along while it comes back
        assert http_from_host(address, node_port).startswith("echo-")
        node = json.loads(lab.kubectl("get", "node", "agent-1", "-o", "json").stdout)
        heartbeat = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        if heartbeat["status"] == "True" and lab.node_status("agent-1")[3] == "yes":
            break
        time.sleep(0.5)
    assert lab.node_status("agent-1")[3] == "yes"
    assert http_from_host(address, node_port).startswith("echo-")


@pytest.fixture(scope="module")
def hostgw_lab(lab, tmp_path_factory):
    """A second lab beside the first (two labs coexist), on host-gw routes."""
    cluster = LabCluster(f"hgw{uuid.uuid4().hex[:6]}", str(tmp_path_factory.mktemp("hgw")))
    try:
        cluster.k8py("up", "--agents", "1", "--flannel-backend", "host-gw")
        yield cluster
    finally:
        cluster.k8py("down", check=False)


def test_pods_reach_pods_on_other_nodes_over_host_gw(hostgw_lab):
    routes = reach_across(hostgw_lab, "web", "agent-1", "probe", "server")
    assert "flannel.1" not in routes and " via " in routes
