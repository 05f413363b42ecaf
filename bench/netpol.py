"""NetworkPolicy benchmark. Needs root, nftables and br_netfilter.

    .venv/bin/python bench/netpol.py [--policies 200] [--pods 500] [--changes 100] [--seconds 5]

Everything runs in network namespaces the benchmark creates and deletes: a node (a bridge,
as the CNI bridge plugin makes, with bridged traffic through the IP hooks) and two pods on
it, a client and a server. Figures:
1. policy sync: POLICIES policies over PODS pods (10 namespaces; every policy in the
   server's namespace, each with a pod+namespace selector peer, a numbered and a named
   port), the rules computed (`policyrules.build`) and applied whole through libnftables,
   as the agent does at start;
2. changes → rules in the kernel, p50/p99 over CHANGES each: a pod that starts (the sets
   that select it gain an element) and a policy edited (its chain rewritten), computed and
   applied as a delta (`nftscript.delta`), as the agent does on every change;
3. connection rate from the client pod to the server pod (new TCP connections, one after
   another, SECONDS each): with no table at all (no conntrack either: the floor), with the
   table of no policies (what every agent has: conntrack on), and with the table of (1), in
   which the server is isolated and every one of the POLICIES policies is visited by each
   new connection (the worst case: all in one namespace); the change against no policies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import netns  # noqa: E402
from k8py.net import nftscript, policyrules  # noqa: E402
from k8py.net.nft import Nft  # noqa: E402

NODE = "bench-node"
SERVER_IP, CLIENT_IP, GATEWAY = "10.42.0.3", "10.42.0.2", "10.42.0.1"
# The client ends each connection with a reset (SO_LINGER 0) and the server closes after
# it: no side keeps TIME_WAIT, so ports never run short and runs do not slow each other.
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(512)
while True:
    conn, _ = s.accept()
    try:
        conn.recv(1)
    except OSError:
        pass
    conn.close()
"""
CLIENT = """
import socket, struct, sys, time
end = time.monotonic() + float(sys.argv[1])
count = 0
while time.monotonic() < end:
    c = socket.create_connection((sys.argv[2], 80), timeout=2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    count += 1
print(count / float(sys.argv[1]))
"""


def pod(namespace: str, name: str, ip: str, labels: dict) -> dict:
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"nodeName": NODE, "containers": [{"ports": [
                {"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip}}


def cluster(policies: int, pods: int):
    namespaces = [{"metadata": {"name": f"ns-{i}", "labels": {"team": f"t{i % 5}"}}}
                  for i in range(10)]
    # every app label in every namespace: each policy selects a pod of ns-0
    pod_list = [pod(f"ns-{i % 10}", f"p{i}", f"10.42.{1 + i // 250}.{i % 250 + 2}",
                    {"app": f"app-{i // 10 % 50}", "role": f"client-{i % 20}"})
                for i in range(pods)]
    # the two real pods: the server in ns-0, the client in ns-5 (team t0), allowed only by
    # the last policy (pol-199 for 200), so every new connection visits them all
    last = policies - 1
    pod_list.append(pod("ns-0", "server", SERVER_IP, {"app": f"app-{last % 50}"}))
    pod_list.append(pod(f"ns-{(last + 1) % 5}", "client", CLIENT_IP,
                        {"role": f"client-{last % 20}"}))
    policy_list = [policy(i) for i in range(policies)]
    return policy_list, pod_list, namespaces


def policy(i: int, port: int = 80) -> dict:
    return {"metadata": {"namespace": "ns-0", "name": f"pol-{i:03d}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"app-{i % 50}"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{
                         "namespaceSelector": {"matchLabels": {"team": f"t{(i + 1) % 5}"}},
                         "podSelector": {"matchLabels": {"role": f"client-{i % 20}"}}}],
                         "ports": [{"protocol": "TCP", "port": port},
                                   {"protocol": "TCP", "port": "http"}]}]}}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def build_pods(tag: str) -> None:
    """The node's bridge and the two pods, as the CNI bridge plugin wires them."""
    def run(*args: str) -> None:
        subprocess.run(args, check=True)
    run("ip", "link", "add", "cni0", "type", "bridge")
    run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "cni0")
    run("ip", "link", "set", "cni0", "up")
    for name, ip in (("server", SERVER_IP), ("client", CLIENT_IP)):
        ns = f"{tag}-{name}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", f"veth-{name}", "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        run("ip", "link", "set", f"veth-{name}", "master", "cni0", "up")
        for args in (("addr", "add", f"{ip}/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                     ("link", "set", "lo", "up"), ("route", "add", "default", "via", GATEWAY)):
            run("ip", "-n", ns, *args)
    with open("/proc/sys/net/bridge/bridge-nf-call-iptables", "w") as f:
        f.write("1")


def connection_rate(tag: str, seconds: float) -> float:
    done = subprocess.run(["ip", "netns", "exec", f"{tag}-client", sys.executable, "-c",
                           CLIENT, str(seconds), SERVER_IP],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the client pod failed: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    tag = f"k8py-np-{uuid.uuid4().hex[:6]}"
    policies, pods, namespaces = cluster(args.policies, args.pods)
    server = None
    with netns(f"{tag}-node"):
        try:
            build_pods(tag)
            server = subprocess.Popen(["ip", "netns", "exec", f"{tag}-server",
                                       sys.executable, "-c", SERVER])
            time.sleep(0.5)  # the listener binds
            nft = Nft()

            started = time.perf_counter()
            table = policyrules.build(policies, pods, namespaces, NODE)
            built = time.perf_counter() - started
            nft.run(nftscript.full(table))
            synced = time.perf_counter() - started
            chains = len(table.chains)
            elements = sum(len(s.elements) for s in table.sets.values())
            print(f"policy sync, {args.policies} policies over {len(pods)} pods "
                  f"({chains} chains, {len(table.sets)} sets, {elements} elements):")
            print(f"  computed {ms(built)}, computed and applied {ms(synced)}")

            for what, change in (("a pod starts", "pod"), ("a policy edited", "policy")):
                samples = []
                current = table
                for i in range(args.changes):
                    if change == "pod":
                        pods.append(pod(f"ns-{1 + i % 5}", f"new-{i}", f"10.42.9.{i % 250 + 2}",
                                        {"role": f"client-{i % 20}"}))
                    else:
                        policies[i % len(policies)] = policy(i % len(policies), 1000 + i)
                    started = time.perf_counter()
                    wanted = policyrules.build(policies, pods, namespaces, NODE)
                    nft.run(nftscript.delta(current, wanted) or "")
                    samples.append(time.perf_counter() - started)
                    current = wanted
                table = current
                samples.sort()
                print(f"  {what}: p50 {ms(statistics.median(samples))}, "
                      f"p99 {ms(samples[int(len(samples) * 0.99) - 1])}")

            nft.run(policyrules.removal())
            bare = connection_rate(tag, args.seconds)
            nft.run(nftscript.full(policyrules.build([], pods, namespaces, NODE)))
            none = connection_rate(tag, args.seconds)
            nft.run(nftscript.full(table))
            with_policies = connection_rate(tag, args.seconds)
            nft.run(policyrules.removal())
            print(f"connections/s client pod -> server pod: no table {bare:8.0f}; "
                  f"no policies {none:8.0f}; {args.policies} policies {with_policies:8.0f} "
                  f"({(with_policies / none - 1) * 100:+.1f}% against no policies)")
        finally:
            if server is not None:
                server.kill()
                server.wait()
            for name in ("server", "client"):
                subprocess.run(["ip", "netns", "delete", f"{tag}-{name}"], check=False)


if __name__ == "__main__":
    main()
