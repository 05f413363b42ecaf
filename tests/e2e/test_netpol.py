"""NetworkPolicy on `k8py lab`, as upstream's netpol e2e probes it: namespaces x, y and z,
pods a, b and c in each (a on the server, b on agent-1, c on agent-2, so traffic crosses
nodes and stays on them), each serving TCP and UDP on ports 80 and 81; every pair is probed
on every port and protocol, and the observed reachability must match the expected truth
table (both are printed) for each policy case, within a deadline.

TCP is served by the pods' own busybox httpd. busybox-static has no UDP server nor client,
so the UDP responder and the probes are small Python programs run in the pods' network
namespaces (`nsenter --net`): to the nodes' rules the packets are the pods' own."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from k8py.agent import cgroups
from tests.conftest import wait_for
from tests.e2e.labcluster import IMAGE, LabCluster

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]

NAMESPACES = ("x", "y", "z")
PODS = {"a": "server", "b": "agent-1", "c": "agent-2"}  # pod name: its node
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))
SERVE_TCP = ("mkdir -p /www && echo ok > /www/index.html && httpd -p 80 -h /www && "
             "httpd -f -p 81 -h /www")
UDP_SERVER = """
import selectors, socket
selector = selectors.DefaultSelector()
for port in (80, 81):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    selector.register(s, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        _, peer = key.fileobj.recvfrom(512)
        key.fileobj.sendto(b"ok", peer)
"""
# argv[1]: JSON [[ip, port, protocol], ...]; prints JSON [reached, ...]. A refused or
# silent peer is unreachable; every probe is a new connection (a new source port).
PROBER = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    ip, port, protocol = target
    try:
        if protocol == "TCP":
            with socket.create_connection((ip, port), timeout=2):
                return True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.connect((ip, port))
            s.send(b"probe")
            return s.recv(16) == b"ok"
    except OSError:
        return False

targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    pid: int  # a process in its network namespace

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


Expectation = Callable[[Pod, Pod, int, str], bool]  # (from, to, port, protocol) -> allowed


@dataclasses.dataclass
class Netpol:
    lab: LabCluster
    pods: list[Pod]

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if str(p) == name)

    def probe_from(self, source: Pod) -> dict[tuple[str, int, str], bool]:
        targets = [(t, port, protocol) for t in self.pods for port, protocol in PORTS]
        done = subprocess.run(["nsenter", f"--net=/proc/{source.pid}/ns/net", sys.executable,
                               "-c", PROBER, json.dumps([(t.ip, port, protocol)
                                                         for t, port, protocol in targets])],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {(str(t), port, protocol): reached
                for (t, port, protocol), reached in zip(targets, json.loads(done.stdout))}

    def observe(self) -> dict[tuple[str, str, int, str], bool]:
        with ThreadPoolExecutor(len(self.pods)) as pool:
            rows = list(pool.map(self.probe_from, self.pods))
        return {(str(source), target, port, protocol): reached
                for source, row in zip(self.pods, rows)
                for (target, port, protocol), reached in row.items()}

    def expected(self, allowed: Expectation) -> dict[tuple[str, str, int, str], bool]:
        # a pod reaching itself never leaves its namespace: never filtered
        return {(str(s), str(t), port, protocol): s == t or allowed(s, t, port, protocol)
                for s in self.pods for t in self.pods for port, protocol in PORTS}

    def apply(self, *policies: dict) -> None:
        self.lab.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": list(policies)}))

    def reset(self) -> None:
        for namespace in NAMESPACES:
            self.lab.kubectl("delete", "networkpolicies", "--all", "-n", namespace)

    def check(self, case: str, allowed: Expectation, timeout: float = 30) -> float:
        """Wait until what the pods observe is the expected table; how long it took.
        Both tables are printed (on failure, with the cells that differ)."""
        expected = self.expected(allowed)
        started = time.monotonic()
        observed: dict = {}

        def matches() -> bool:
            nonlocal observed
            observed = self.observe()
            return observed == expected
        try:
            wait_for(matches, timeout=timeout, interval=0.2, what=f"reachability: {case}")
        finally:
            print(f"\n{case}\n{truth_table(self.pods, expected, observed)}")
        took = time.monotonic() - started
        print(f"matched after {took:.2f} s")
        return took


def truth_table(pods: list[Pod], expected: dict, observed: dict) -> str:
    """One table per port and protocol, rows from, columns to: `.` reached, `X` refused;
    a cell where observation and expectation differ shows both, `expected!observed`."""
    lines = []
    for port, protocol in PORTS:
        lines.append(f"{port}/{protocol:<4} " + " ".join(f"{str(t):>5}" for t in pods))
        for s in pods:
            cells = []
            for t in pods:
                key = (str(s), str(t), port, protocol)
                want = "." if expected[key] else "X"
                got = "." if observed.get(key, expected[key]) else "X"
                cells.append(f"{want:>5}" if want == got else f"{want + '!' + got:>5}")
            lines.append(f"{str(s):>8} " + " ".join(cells))
    return "\n".join(lines)


def network_policy(namespace: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": namespace, "name": name}, "spec": spec}


def namespace_is(*names: str) -> dict:
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                  "values": list(names)}]}


@pytest.fixture(scope="module")
def netpol(lab):
    for namespace in NAMESPACES:
        lab.kubectl("create", "namespace", namespace)
    for namespace in NAMESPACES:
        for name, node in PODS.items():
            lab.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"pod": name}},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                         "containers": [{
                             "name": "serve", "image": IMAGE,
                             "imagePullPolicy": "IfNotPresent",
                             "command": ["sh", "-c", SERVE_TCP],
                             "ports": [{"name": f"serve-{port}-{protocol.lower()}",
                                        "containerPort": port, "protocol": protocol}
                                       for port, protocol in PORTS]}]}}))

    def running():
        pods = []
        for namespace in NAMESPACES:
            items = json.loads(lab.kubectl("get", "pods", "-n", namespace, "-o",
                                           "json").stdout)["items"]
            for item in items:
                pids = cgroups.pod_processes(item["metadata"]["uid"])
                if item["status"].get("phase") != "Running" or not pids:
                    return None
                pods.append(Pod(namespace, item["metadata"]["name"],
                                item["status"]["podIP"], min(pids)))
        return len(pods) == len(NAMESPACES) * len(PODS) and \
            sorted(pods, key=lambda p: (p.namespace, p.name))
    pods = wait_for(running, timeout=120, interval=0.5, what="the netpol pods running")
    responders = [subprocess.Popen(["nsenter", f"--net=/proc/{p.pid}/ns/net", sys.executable,
                                    "-c", UDP_SERVER], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for p in pods]
    try:
        yield Netpol(lab, pods)
    finally:
        for responder in responders:
            responder.kill()
            responder.wait()
        for namespace in NAMESPACES:
            lab.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_without_policies_every_pod_reaches_every_pod(netpol):
    netpol.reset()
    netpol.check("no policies", lambda s, t, port, protocol: True)


def test_default_deny_ingress_and_the_node_still_reaches_its_pods(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "deny-ingress", {"podSelector": {},
                                                      "policyTypes": ["Ingress"]}))
    netpol.check("default deny ingress in x", lambda s, t, port, protocol: t.namespace != "x")
    # kubelet probes come from the node itself: never filtered
    target = netpol.pod("x/a")
    done = netpol.lab.k8py("exec", "server", "--", sys.executable, "-c", PROBER,
                           json.dumps([[target.ip, 80, "TCP"], [target.ip, 81, "UDP"]]))
    assert json.loads(done.stdout) == [True, True]


def test_allow_from_a_namespace_selector(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "allow-from-y", {
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": namespace_is("y")}]}]}))
    netpol.check("x allows ingress from namespace y",
                 lambda s, t, port, protocol: t.namespace != "x" or s.namespace == "y")


def test_allow_from_pod_and_namespace_selector_together(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "allow-b-of-y-z", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": namespace_is("y", "z"),
                               "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    netpol.check("x/a allows ingress from pods b of namespaces y and z (ANDed)",
                 lambda s, t, port, protocol: str(t) != "x/a" or (
                     s.name == "b" and s.namespace in ("y", "z")))


def test_allow_by_named_port(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "allow-serve-81-tcp", {
        "podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))
    netpol.check("x allows ingress on named port serve-81-tcp only",
                 lambda s, t, port, protocol: t.namespace != "x" or (port, protocol) == (
                     81, "TCP"))


def test_end_port_ranges(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "allow-81-to-90", {
        "podSelector": {}, "ingress": [{"ports": [
            {"protocol": "TCP", "port": 81, "endPort": 90},
            {"protocol": "UDP", "port": 70, "endPort": 80}]}]}))
    netpol.check("x allows ingress on TCP 81-90 and UDP 70-80",
                 lambda s, t, port, protocol: t.namespace != "x" or (port, protocol) in (
                     (81, "TCP"), (80, "UDP")))


def test_egress_deny_with_dns_allowed(netpol):
    netpol.reset()
    netpol.apply(network_policy("x", "deny-egress-but-dns", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53},
                              {"protocol": "TCP", "port": 53}]}]}))
    netpol.check("x may send DNS only (replies to others still pass)",
                 lambda s, t, port, protocol: s.namespace != "x")
    done = netpol.lab.kubectl("exec", "-n", "x", "a", "--", "nslookup",
                              "kubernetes.default.svc.cluster.local", check=False)
    assert done.returncode == 0 and "10.43.0.1" in done.stdout, done.stdout + done.stderr


def test_ip_block_with_except_does_not_skip_later_peers(netpol):
    netpol.reset()
    y_b, z_b = netpol.pod("y/b"), netpol.pod("z/b")
    netpol.apply(network_policy("x", "ip-block", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.42.0.0/16", "except": [f"{y_b.ip}/32", f"{z_b.ip}/32"]}},
            # z/b is excepted above, allowed here: an except narrows only its own block
            {"namespaceSelector": namespace_is("z"),
             "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    netpol.check("x/a allows the pod network but y/b",
                 lambda s, t, port, protocol: str(t) != "x/a" or s != y_b)


def test_a_policy_changed_live(netpol):
    netpol.reset()
    policy = network_policy("x", "allow-from", {
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": namespace_is("y")}]}]})
    netpol.apply(policy)
    netpol.check("x allows namespace y", lambda s, t, port, protocol:
                 t.namespace != "x" or s.namespace == "y")
    policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = namespace_is("z")
    netpol.apply(policy)
    netpol.check("the same policy, now allowing namespace z", lambda s, t, port, protocol:
                 t.namespace != "x" or s.namespace == "z")
    netpol.reset()
    netpol.check("the policy deleted", lambda s, t, port, protocol: True)
