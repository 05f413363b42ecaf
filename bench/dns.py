"""Cluster DNS benchmark: the agent's DNS server (`k8py.net.dns`) asked from a pod's network
namespace. Needs root (network namespaces).

    sudo .venv/bin/python bench/dns.py [--services 1000] [--endpoints 5] [--seconds 5]

Two namespaces the benchmark creates and deletes: a node, where a server process answers
at 10.88.0.1:53 as the agent does (with an upstream resolver of its own on 127.0.0.2 for
names outside the cluster), and a pod joined to it by a veth pair, where a load generator
(another process, on the other core) keeps 32 queries in flight over UDP. SERVICES
Services with ENDPOINTS endpoints each (half of them headless). Figures:
1. queries/s and p50/p99 latency for cluster names (`svc-N.bench.svc.cluster.local`, A),
   asked again and again (what pods do: the server keeps its answers by question until the
   cluster changes), and asked each time in another mix of upper and lower case, so that
   every question is new and answered from the view;
2. the same for search-path misses (`example.com.bench.svc.cluster.local`: what `ndots:5`
   makes every pod send first), answered from memory;
3. the same for names outside the cluster, forwarded to the upstream and then cached;
4. memory: the server process's RSS holding the Services and EndpointSlices (as the
   agent's informers do) with cluster DNS off, and with it on (dnspython, the view, the
   listeners, the answers it keeps) after the load: what DNS adds to an agent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_ADDRESS, POD_ADDRESS, UPSTREAM = "10.88.0.1", "10.88.0.2", "127.0.0.2"

# argv: server address, seconds, file of names, expected rcode, "fresh" or "same"; prints
# JSON {rate, p50, p99} (seconds). "fresh" writes every name in a random mix of upper and
# lower case (as resolvers using 0x20 do), so no two questions are alike and none is
# answered from the server's kept answers. An answer with another ID, another rcode or
# (NOERROR) no records ends it.
LOAD = """
import json, random, selectors, socket, struct, sys, time
server, seconds, names = sys.argv[1], float(sys.argv[2]), json.load(open(sys.argv[3]))
rcode, fresh = int(sys.argv[4]), sys.argv[5] == "fresh"
def query(name, qid):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", 1, 1)
selector = selectors.DefaultSelector()
sent, latencies, n = {}, [], 0
def send(sock):
    global n
    n += 1
    name = names[n % len(names)]
    if fresh:
        name = "".join(c.upper() if random.random() < 0.5 else c for c in name)
    sock.send(query(name, n & 0xFFFF))
    sent[sock] = (time.perf_counter(), n & 0xFFFF)
for _ in range(32):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, 53))
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
    send(sock)
started = time.perf_counter()
end = started + seconds
while time.perf_counter() < end:
    events = selector.select(2)
    if not events:
        raise SystemExit("no answer for 2 s")
    for key, _ in events:
        reply = key.fileobj.recv(4096)
        qid, flags, _, answers = struct.unpack(">HHHH", reply[:8])
        if qid != sent[key.fileobj][1] or flags & 0xF != rcode or (rcode == 0 and not answers):
            raise SystemExit(f"unexpected answer: id {qid}, rcode {flags & 0xF}, {answers} records")
        latencies.append(time.perf_counter() - sent[key.fileobj][0])
        send(key.fileobj)
elapsed = time.perf_counter() - started
latencies.sort()
print(json.dumps({"rate": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
                  "p99": latencies[int(len(latencies) * 0.99)]}))
"""


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


def serve(services_count: int, endpoints: int) -> None:
    """The server process (in the node's namespace): objects first, then DNS; RSS lines on
    stdout; runs until stdin closes."""
    import asyncio
    import gc

    sys.path.insert(0, HERE)
    from benchlib import rss_mb

    services, slices = objects(services_count, endpoints)
    gc.collect()
    print(f"rss-off {rss_mb(os.getpid()):.1f}", flush=True)
    # this folder first on the path would make `import dns` find this file
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    sys.path.insert(0, os.path.dirname(HERE))
    import dns.message
    import dns.rrset

    from k8py.net import dns as cluster_dns

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

    async def main() -> None:
        loop = asyncio.get_running_loop()
        view = cluster_dns.ClusterView("cluster.local", services, slices, [])
        await loop.create_datagram_endpoint(Upstream, local_addr=(UPSTREAM, 53))
        server = cluster_dns.DnsServer(SERVER_ADDRESS, lambda: view,
                                       cluster_dns.Forwarder([UPSTREAM], set()))
        task = asyncio.create_task(server.serve())
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.readline():
            print(f"rss-on {rss_mb(os.getpid()):.1f}", flush=True)
        task.cancel()

    asyncio.run(main())


def run(*args: str) -> None:
    subprocess.run(args, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.services, args.endpoints)
        return
    tag = f"k8py-dns-{uuid.uuid4().hex[:6]}"
    node, pod = f"{tag}-node", f"{tag}-pod"
    server = None
    try:
        for ns in (node, pod):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0",
            "netns", pod)
        run("ip", "-n", node, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "veth0")
        run("ip", "-n", pod, "addr", "add", f"{POD_ADDRESS}/24", "dev", "eth0")
        run("ip", "-n", node, "link", "set", "veth0", "up")
        run("ip", "-n", pod, "link", "set", "eth0", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", node, sys.executable, os.path.abspath(__file__), "--serve",
             "--services", str(args.services), "--endpoints", str(args.endpoints)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        rss_off = float(server.stdout.readline().split()[1])
        assert server.stdout.readline().strip() == "ready"
        print(f"Cluster DNS benchmark: {args.services} Services x {args.endpoints} endpoints, "
              "asked from a pod's namespace, 32 queries in flight (UDP)")
        cluster = [f"svc-{i}.bench.svc.cluster.local" for i in range(args.services)]
        kinds = [  # what, names, the rcode every answer must have, how they are written
            ("cluster names", cluster, 0, "same"),
            ("cluster names, every question new", cluster, 0, "fresh"),
            ("search-path misses (from memory)",
             [f"name-{i}.example.com.bench.svc.cluster.local" for i in range(100)], 3, "same"),
            ("outside names (forwarded, cached)", [f"host-{i}.example.com" for i in range(100)],
             0, "same"),
        ]
        for what, names, rcode, written in kinds:
            with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
                json.dump(names, f)
                f.flush()
                done = subprocess.run(["ip", "netns", "exec", pod, sys.executable, "-c", LOAD,
                                       SERVER_ADDRESS, str(args.seconds), f.name,
                                       str(rcode), written],
                                      capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"load generator failed: {done.stderr.strip()}")
            result = json.loads(done.stdout)
            print(f"  {what:<35} {result['rate']:8,.0f} queries/s   "
                  f"p50 {result['p50'] * 1e3:6.2f} ms   p99 {result['p99'] * 1e3:6.2f} ms")
        server.stdin.write("report\n")
        server.stdin.flush()
        rss_on = float(server.stdout.readline().split()[1])
        print(f"  memory: RSS {rss_off:.1f} MB holding the objects with DNS off, {rss_on:.1f} MB "
              f"with DNS on: DNS adds {rss_on - rss_off:.1f} MB")
    finally:
        if server is not None:
            server.stdin.close()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
