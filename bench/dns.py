"""Cluster DNS benchmark: the agent's DNS server (`k8py.net.dns`) on loopback, in this process.

    .venv/bin/python bench/dns.py [--services 1000] [--endpoints 5] [--queries 20000]

A view of SERVICES Services with ENDPOINTS endpoints each (half of them headless), and a
load generator of 32 concurrent UDP clients. Figures:
1. queries/s and p50/p99 latency for cluster names (`svc-N.bench.svc.cluster.local`, A);
2. the same for search-path misses (`example.com.bench.svc.cluster.local`: what `ndots:5`
   makes every pod send first), answered from memory;
3. the same for names outside the cluster, forwarded to an upstream (a trivial responder on
   another loopback port) and then cached;
4. memory: this process's RSS with the view built, beside before it (what DNS adds to an
   agent).
The load generator shares the process (and the core) with the server: the rates are a
floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

# this file's own folder first on the path would make `import dns` find this file
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import dns.message  # noqa: E402
import dns.rrset  # noqa: E402

from k8py.net import dns as cluster_dns  # noqa: E402

# with dnspython imported, this folder may go back on the path for the shared helpers
sys.path.append(HERE)
from benchlib import rss_mb  # noqa: E402

PORT, UPSTREAM_PORT = 15353, 15354


def objects(count: int, endpoints: int):
    services, slices = [], []
    for i in range(count):
        headless = i % 2 == 1
        services.append({"metadata": {"namespace": "bench", "name": f"svc-{i}"},
                         "spec": {"clusterIP": "None" if headless else
                                  f"10.43.{i // 250}.{i % 250 + 1}",
                                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        slices.append({"metadata": {"namespace": "bench", "name": f"svc-{i}-x",
                                    "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
                       "addressType": "IPv4",
                       "endpoints": [{"addresses": [f"10.42.{(i * endpoints + j) // 250 % 256}."
                                                    f"{(i * endpoints + j) % 250 + 2}"],
                                      "conditions": {"ready": True}}
                                     for j in range(endpoints)]})
    return services, slices


class Upstream(asyncio.DatagramProtocol):
    """Answers every question with A 192.0.2.1 (TTL 300)."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.answer = [dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                               "192.0.2.1")]
        self.transport.sendto(response.to_wire(), addr)


async def load(names: list[str], total: int, concurrency: int = 32) -> tuple[float, list]:
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def client(worker: int) -> None:
        for n in range(worker, total, concurrency):
            query = dns.message.make_query(names[n % len(names)], "A")
            done = loop.create_future()

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    if not done.done():
                        done.set_result(data)
            transport, _ = await loop.create_datagram_endpoint(
                Proto, remote_addr=("127.0.0.1", PORT))
            started = time.perf_counter()
            transport.sendto(query.to_wire())
            await asyncio.wait_for(done, 5)
            latencies.append(time.perf_counter() - started)
            transport.close()
    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    return total / (time.perf_counter() - started), sorted(latencies)


def line(what: str, rate: float, latencies: list[float]) -> str:
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return (f"  {what:<34} {rate:8,.0f} queries/s   p50 {statistics.median(latencies) * 1e3:6.2f} ms"
            f"   p99 {p99 * 1e3:6.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--queries", type=int, default=20000)
    args = parser.parse_args()
    before = rss_mb(os.getpid())
    services, slices = objects(args.services, args.endpoints)
    started = time.perf_counter()
    view = cluster_dns.ClusterView("cluster.local", services, slices, [])
    built = time.perf_counter() - started
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(Upstream,
                                                      local_addr=("127.0.0.2", UPSTREAM_PORT))
    server = cluster_dns.DnsServer("127.0.0.1", lambda: view,
                                   cluster_dns.Forwarder(["127.0.0.2"], set(), UPSTREAM_PORT),
                                   port=PORT)
    task = asyncio.create_task(server.serve())
    await asyncio.sleep(0.2)
    print(f"Cluster DNS benchmark: {args.services} Services x {args.endpoints} endpoints "
          f"(view built in {built * 1e3:.0f} ms), 32 concurrent UDP clients")
    cluster = [f"svc-{i}.bench.svc.cluster.local" for i in range(args.services)]
    misses = [f"name-{i}.example.com.bench.svc.cluster.local" for i in range(100)]
    outside = [f"host-{i}.example.com" for i in range(100)]
    print(line("cluster names", *await load(cluster, args.queries)))
    print(line("search-path misses (from memory)", *await load(misses, args.queries)))
    print(line("outside names (forwarded, cached)", *await load(outside, args.queries)))
    print(f"  memory: RSS {rss_mb(os.getpid()):.0f} MB with the view ({before:.0f} MB before the "
          f"objects were made)")
    task.cancel()
    upstream.close()


if __name__ == "__main__":
    asyncio.run(main())
