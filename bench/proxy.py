"""Service proxy benchmark. Needs root and nftables.

    .venv/bin/python bench/proxy.py [--services 1000] [--endpoints 5] [--changes 200]

Everything runs in a network namespace the benchmark creates (this process's thread enters
it) and deletes at the end. Figures:
1. full sync of SERVICES Services × ENDPOINTS endpoints: the ruleset computed from the
   objects (`servicerules`), applied through libnftables (`k8py.net.nft`, what the proxy
   does), and beside it the floor: the same script through `nft -f` (the nft command);
2. endpoint change → rules in the kernel: one endpoint of one Service replaced, the rules
   recomputed and what changed applied (`nftscript.delta`, as the proxy does), p50/p99
   over CHANGES changes;
3. memory: this process's RSS holding the objects and the last ruleset (what the proxy adds
   to an agent), beside the RSS before the objects were made.
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

from benchlib import netns, rss_mb  # noqa: E402
from k8py.net import nftscript, servicerules  # noqa: E402
from k8py.net.nft import Nft  # noqa: E402

def objects(services: int, endpoints: int):
    svcs, slices = [], []
    for i in range(services):
        name = f"svc-{i}"
        svcs.append({"metadata": {"namespace": "bench", "name": name},
                     "spec": {"type": "NodePort" if i % 10 == 0 else "ClusterIP",
                              "clusterIP": f"10.43.{i // 250}.{i % 250 + 1}",
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                         "nodePort": 30000 + i if i % 10 == 0 else None}]}})
        slices.append({"metadata": {"namespace": "bench", "name": f"{name}-x",
                                    "labels": {"kubernetes.io/service-name": name}},
                       "addressType": "IPv4",
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                       "endpoints": [{"addresses": [f"10.42.{(i * endpoints + j) // 250 % 256}."
                                                    f"{(i * endpoints + j) % 250 + 2}"],
                                      "conditions": {"ready": True}}
                                     for j in range(endpoints)]})
    return svcs, slices


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/proxy.py needs root (a network namespace, nftables)")
    before = rss_mb(os.getpid())
    svcs, slices = objects(args.services, args.endpoints)
    with netns(f"k8py-bench-{uuid.uuid4().hex[:8]}"):
        nft = Nft()
        started = time.perf_counter()
        script = servicerules.ruleset(servicerules.service_ports(svcs, slices), "10.42.0.0/16")
        computed = time.perf_counter()
        nft.run(script)
        applied = time.perf_counter()
        floor = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
            floor.append(time.perf_counter() - t)
        library = []
        for _ in range(3):
            t = time.perf_counter()
            nft.run(script)
            library.append(time.perf_counter() - t)
        print(f"Service proxy benchmark: {args.services} Services x {args.endpoints} "
              f"endpoints ({len(script) / 1e6:.1f} MB of nft script)")
        print(f"  full sync: compute {ms(computed - started)}, apply {ms(applied - computed)} "
              f"(libnftables); again: apply median {ms(statistics.median(library))}")
        print(f"  floor, the same script through `nft -f`: median {ms(statistics.median(floor))}")
        latencies = []
        applied = servicerules.build(servicerules.service_ports(svcs, slices), "10.42.0.0/16")
        for change in range(args.changes):
            item = slices[change % len(slices)]
            item["endpoints"][0]["addresses"] = [f"10.42.255.{change % 250 + 2}"]
            t = time.perf_counter()
            rules = servicerules.build(servicerules.service_ports(svcs, slices),
                                       "10.42.0.0/16")
            nft.run(nftscript.delta(applied, rules))
            applied = rules
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"  endpoint change -> rules in the kernel, as a delta ({args.changes} changes): "
              f"p50 {ms(statistics.median(latencies))}, p99 {ms(p99)}")
        print(f"  memory: RSS {rss_mb(os.getpid()):.0f} MB holding the objects and the ruleset "
              f"({before:.0f} MB before them)")
        nft.run(servicerules.removal())


if __name__ == "__main__":
    main()
