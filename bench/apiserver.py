"""API server benchmark over HTTPS against a real `k8py server --disable-agent` process.

    .venv/bin/python bench/apiserver.py [--pods 5000] [--store sqlite|memory]
                                        [--audit off,on]

Prints, for pods (a realistic ~1.5 KB manifest) with 32 concurrent clients: create, get and
update throughput with p50/p99 latency and the server's CPU time per request (all its
threads; the figure other load on the machine disturbs least); a paced mixed load of 500 requests/s (70% get,
20% update, 10% list of one namespace page) with its p50/p99; a LIST of all pods; watch
fan-out (200 watchers on pods, latency from just before a create to each watcher's receipt);
the server's resident memory (VmRSS) before and after holding the pods; and 2,000 watches
without a resourceVersion over 1,000 ConfigMaps (time until each has its initial events,
server RSS open and after).

Server configurations are the product of the values asked for on each axis (`AXES`): today
`--audit off,on` (on: a Metadata-level policy for every request, the log in a file), one
server process per configuration, run one after the other; a table at the end puts each
configuration's figures side by side. Another axis is another entry in `AXES` and a flag.

The server runs with `--disable-scheduler --disable-controller-manager`, so the figures are
the API server's alone (5,000 pods nobody can run would otherwise each cost the scheduler a
status write and an Event). The load generator is one Python process with aiohttp, sharing the 2 cores with the server:
its own cost is part of every figure (an upper bound on the server's latency); each phase
prints the load generator's own CPU use, to tell when it, not the server, set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
from benchlib import free_port, rss_mb, stop_process

CONCURRENCY = 32


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web",
                                              "pod-template-hash": "5d8f9c7b6"},
                     "annotations": {"bench/note": "x" * 200}},
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example/app:1.2.3",
                "args": ["--port=8080", "--log-level=info"],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                   "periodSeconds": 5},
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        },
    }


def _load_cpu(cpu_at_start: float, elapsed: float) -> str:
    """The load generator's own CPU use since cpu_at_start: near 100% of a core means it,
    not the server, set the pace."""
    return f"load generator {100 * (time.process_time() - cpu_at_start) / elapsed:.0f}% CPU"


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (all its threads): per request, a figure the
    other work on the machine disturbs far less than rates and latencies."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000


class Bench:
    def __init__(self, url: str, context: ssl.SSLContext):
        self.url = url
        self.context = context
        self.figures: dict[str, str] = {}  # for the table that compares configurations
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=CONCURRENCY * 8))
        self.base = url + "/api/v1/namespaces/default/pods"

    async def timed(self, method: str, url: str, body=None, expect=(200, 201)):
        start = time.perf_counter()
        data = json.dumps(body) if body is not None else None
        async with self.session.request(method, url, data=data,
                                        headers={"Content-Type": "application/json"}) as r:
            payload = await r.read()
            if r.status not in expect:
                raise RuntimeError(f"{method} {url}: {r.status} {payload[:200]!r}")
        return time.perf_counter() - start, payload

    async def phase(self, label: str, count: int, make_request) -> None:
        latencies: list[float] = []
        queue = iter(range(count))

        async def worker():
            for i in queue:
                latency, _ = await make_request(i)
                latencies.append(latency)

        start, cpu = time.perf_counter(), time.process_time()
        served = server_cpu(self.pid)
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
        per_request = (server_cpu(self.pid) - served) / count * 1e6
        self.figures[label] = (f"{count / elapsed:,.0f}/s, p50 {pct(latencies, 50):.1f}, "
                               f"p99 {pct(latencies, 99):.1f} ms, {per_request:,.0f} µs CPU")
        print(f"  {label:<28} {count / elapsed:8,.0f}/s   p50 {pct(latencies, 50):6.1f} ms"
              f"   p99 {pct(latencies, 99):6.1f} ms   server CPU {per_request:,.0f} µs/request"
              f"   (server RSS {rss_mb(self.pid):.0f} MB, {_load_cpu(cpu, elapsed)})")

    async def run(self, pods: int, pid: int) -> None:
        self.pid = pid
        print(f"  server RSS at start: {rss_mb(pid):.0f} MB")
        await self.phase(f"create {pods} pods", pods,
                         lambda i: self.timed("POST", self.base, pod(f"p{i:05}")))
        versions = {}
        _, listing = await self.timed("GET", self.base)
        for item in json.loads(listing)["items"]:
            versions[item["metadata"]["name"]] = item
        await self.phase("get one pod", pods * 2,
                         lambda i: self.timed("GET", f"{self.base}/p{i % pods:05}"))

        async def update(i):
            name = f"p{i % pods:05}"
            obj = versions[name]
            obj["metadata"]["labels"]["rev"] = str(i)
            latency, body = await self.timed("PUT", f"{self.base}/{name}", obj)
            versions[name] = json.loads(body)
            return latency, body

        await self.phase("update (PUT) pods", min(pods, 2000), update)

        times = []
        for _ in range(5):
            latency, body = await self.timed("GET", self.base)
            times.append(latency)
        size = len(body) / 1e6
        self.figures[f"LIST of {pods} pods"] = f"{statistics.median(times) * 1000:.0f} ms"
        print(f"  LIST of {pods} pods: median {statistics.median(times) * 1000:.0f} ms "
              f"({size:.1f} MB)   (server RSS {rss_mb(pid):.0f} MB)")
        await self.mixed(pods, rate=500, seconds=10, versions=versions)
        self.figures[f"server RSS holding {pods} pods"] = f"{rss_mb(pid):.0f} MB"
        print(f"  server RSS holding {pods} pods: {rss_mb(pid):.0f} MB")
        await self.watch_fanout(200, 50)
        print(f"  server RSS with 200 open watches: {rss_mb(pid):.0f} MB")
        await self.watch_memory(configmaps=1000, watchers=2000)

    async def watch_memory(self, configmaps: int, watchers: int) -> None:
        """Many watches without a resourceVersion over one collection: each first receives
        every object. Prints the time until all have received theirs, and the server's RSS
        with them open and after they close."""
        base = self.base.replace("/pods", "/configmaps")
        await self.phase(f"create {configmaps} configmaps", configmaps, lambda i: self.timed(
            "POST", base, {"metadata": {"name": f"cm{i:04}", "labels": {"app": "bench"}},
                           "data": {"key": "v" * 200}}))
        before = rss_mb(self.pid)
        done = asyncio.Event()
        received = 0

        watch_session = aiohttp.ClientSession(  # one connection per watch, no pool limit
            connector=aiohttp.TCPConnector(ssl=self.context, limit=0))

        async def watch():
            nonlocal received
            async with watch_session.get(base, params={"watch": "true"},
                                        timeout=aiohttp.ClientTimeout(total=None)) as r:
                for _ in range(configmaps):
                    if not await r.content.readline():
                        raise SystemExit("a watch ended early")
                received += 1
                await done.wait()

        start = time.perf_counter()
        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        while received < watchers:
            await asyncio.sleep(0.05)
        opened = time.perf_counter() - start
        during = rss_mb(self.pid)
        done.set()
        await asyncio.gather(*tasks)
        await watch_session.close()
        await asyncio.sleep(1)
        self.figures[f"{watchers} watches, initial events"] = f"{opened:.1f} s"
        print(f"  {watchers} watches over {configmaps} configmaps (no resourceVersion): all "
              f"initial events received in {opened:.1f} s; server RSS {before:.0f} MB before, "
              f"{during:.0f} MB open, {rss_mb(self.pid):.0f} MB after they closed")

    async def mixed(self, pods: int, rate: int, seconds: int, versions: dict) -> None:
        latencies: list[float] = []
        start, cpu = time.perf_counter(), time.process_time()
        tasks = []

        async def one(i):
            kind = i % 10
            if kind < 7:
                latency, _ = await self.timed("GET", f"{self.base}/p{i % pods:05}")
            elif kind < 9:
                name = f"p{(i * 7) % pods:05}"
                obj = versions[name]
                obj["metadata"]["labels"]["mixed"] = str(i)
                latency, body = await self.timed("PUT", f"{self.base}/{name}", obj,
                                                 expect=(200, 409))
                if latency and body:
                    try:
                        fresh = json.loads(body)
                        if fresh.get("kind") == "Pod":
                            versions[name] = fresh
                    except ValueError:
                        pass
            else:
                latency, _ = await self.timed("GET", f"{self.base}?limit=50")
            latencies.append(latency)

        for i in range(rate * seconds):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        achieved = len(latencies) / elapsed
        self.figures[f"mixed load at {rate}/s"] = (f"{achieved:,.0f}/s, p50 "
                                                   f"{pct(latencies, 50):.1f}, p99 "
                                                   f"{pct(latencies, 99):.1f} ms")
        print(f"  mixed load at {rate}/s for {seconds} s: achieved {achieved:,.0f}/s, "
              f"p50 {pct(latencies, 50):.1f} ms, p99 {pct(latencies, 99):.1f} ms "
              f"({_load_cpu(cpu, elapsed)})")

    async def watch_fanout(self, watchers: int, writes: int) -> None:
        issued: dict[str, float] = {}
        latencies: list[float] = []
        _, listing = await self.timed("GET", self.base + "?limit=1")
        rv = json.loads(listing)["metadata"]["resourceVersion"]
        ready = 0

        async def watch():
            nonlocal ready
            params = {"watch": "true", "resourceVersion": rv, "labelSelector": "app=fan"}
            async with self.session.get(self.base, params=params,
                                        timeout=aiohttp.ClientTimeout(total=None)) as r:
                ready += 1
                seen = 0
                while seen < writes:
                    line = await r.content.readline()
                    if not line:
                        return
                    event = json.loads(line)
                    latencies.append(time.perf_counter() -
                                     issued[event["object"]["metadata"]["name"]])
                    seen += 1

        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        while ready < watchers:
            await asyncio.sleep(0.05)
        for i in range(writes):
            name = f"fan{i:04}"
            body = pod(name)
            body["metadata"]["labels"]["app"] = "fan"
            issued[name] = time.perf_counter()
            await self.timed("POST", self.base, body)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        self.figures["watch fan-out"] = (f"p50 {pct(latencies, 50):.1f}, "
                                         f"p99 {pct(latencies, 99):.1f} ms")
        print(f"  watch fan-out, {watchers} watchers x {writes} creates: "
              f"p50 {pct(latencies, 50):.1f} ms, p99 {pct(latencies, 99):.1f} ms")


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
"""


def _audit_on(root: str) -> list[str]:
    """Every request audited at Metadata, to a file (RequestReceived and ResponseComplete
    events, as a policy without omitStages writes them)."""
    policy = os.path.join(root, "audit-policy.yaml")
    with open(policy, "w") as f:
        f.write(AUDIT_POLICY)
    return ["--audit-policy-file", policy, "--audit-log-path",
            os.path.join(root, "audit", "audit.log")]


def _audit_report(root: str) -> str:
    directory = os.path.join(root, "audit")
    total = sum(os.path.getsize(os.path.join(directory, name))
                for name in os.listdir(directory))
    return f"audit log: {total / 1e6:.0f} MB written"


# configuration axes: per axis, the server flags of each value (given the run's folder) and,
# optionally, a line to print after the run
AXES = {
    "audit": {"off": (lambda root: [], None), "on": (_audit_on, _audit_report)},
}


async def run_configuration(args, label: str, values: dict[str, str]) -> dict[str, str]:
    root = tempfile.mkdtemp(prefix="k8py-apibench-", dir=args.dir)
    port = free_port()
    kubeconfig = os.path.join(root, "kubeconfig.yaml")
    endpoint = "memory://" if args.store == "memory" else ""
    extra = [flag for axis, value in values.items() for flag in AXES[axis][value][0](root)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--data-dir",
         os.path.join(root, "data"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(port), "--write-kubeconfig", kubeconfig, "--datastore-endpoint", endpoint,
         "--disable-scheduler", "--disable-controller-manager", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(kubeconfig):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start")
            await asyncio.sleep(0.1)
        tls = os.path.join(root, "data", "server", "tls")
        context = ssl.create_default_context(cafile=os.path.join(tls, "server-ca.crt"))
        context.load_cert_chain(os.path.join(tls, "client-admin.crt"),
                                os.path.join(tls, "client-admin.key"))
        print(f"API benchmark [{label}]: https://127.0.0.1:{port}, {args.store} store, "
              f"{CONCURRENCY} concurrent clients")
        bench = Bench(f"https://127.0.0.1:{port}", context)
        try:
            await bench.run(args.pods, proc.pid)
        finally:
            await bench.session.close()
        stop_process(proc, timeout=20)
        for axis, value in values.items():
            report = AXES[axis][value][1]
            if report is not None:
                print(f"  {report(root)}")
        return bench.figures
    finally:
        stop_process(proc, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


async def main(args) -> None:
    chosen = {axis: getattr(args, axis).split(",") for axis in AXES}
    for axis, values in chosen.items():
        unknown = [v for v in values if v not in AXES[axis]]
        if unknown:
            raise SystemExit(f"--{axis}: unknown value {unknown[0]!r} "
                             f"(known: {', '.join(AXES[axis])})")
    results = {}
    for combination in itertools.product(*chosen.values()):
        values = dict(zip(chosen, combination))
        label = " ".join(f"{axis}={value}" for axis, value in values.items())
        results[label] = await run_configuration(args, label, values)
    if len(results) > 1:
        print("\nside by side:")
        labels = list(results)
        width = max(len(f) for r in results.values() for f in r)
        columns = [max(len(label), *(len(v) for v in results[label].values()))
                   for label in labels]
        print(f"  {'':<{width}}  " + "  ".join(f"{label:<{c}}"
                                             for label, c in zip(labels, columns)))
        for figure in results[labels[0]]:
            print(f"  {figure:<{width}}  " + "  ".join(
                f"{results[label].get(figure, '-'):<{c}}" for label, c in zip(labels, columns)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--dir", default=os.getcwd())
    parser.add_argument("--audit", default="off", metavar="off,on",
                        help="audit configurations to run (comma-separated)")
    asyncio.run(main(parser.parse_args()))
