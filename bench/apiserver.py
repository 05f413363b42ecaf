"""API server benchmark over HTTPS against a real `k8py server --disable-agent` process.

    .venv/bin/python bench/apiserver.py [--pods 5000] [--store sqlite,memory,etcd]
                                        [--rbac off,on] [--audit off,on]

Prints, for pods (a realistic ~1.5 KB manifest) with 32 concurrent clients: create, get and
update throughput with p50/p99 latency and the server's CPU time per request (all its
threads; the figure other load on the machine disturbs least); a paced mixed load of 500 requests/s (70% get,
20% update, 10% list of one namespace page) with its p50/p99; a LIST of all pods; watch
fan-out (200 watchers on pods, latency from just before a create to each watcher's receipt);
the server's resident memory (VmRSS) before and after holding the pods; and 2,000 watches
without a resourceVersion over 1,000 ConfigMaps (time until each has its initial events,
server RSS open and after).

Server configurations are the product of the values asked for on each axis (`AXES`):
`--rbac off,on` (on: the default `--authorization-mode Node,RBAC`; off: `AlwaysAllow`) and
`--audit off,on` (on: a Metadata-level policy for every request, the log in a file) and
`--store sqlite,etcd` (etcd: a one-member etcd on loopback started for the configuration);
by default every value of each, one server process per configuration, run one after the
other. A table at the end puts each configuration's figures side by side, then, per axis
run off and on, what turning it on added to each phase's p99 (in %) and server CPU per
request (in µs), beside each value of the other axes: the authorization row is the
security goal's "authorization adds ≤ 10% to p99". Another axis is another entry in
`AXES` and a flag.

The load generator is an ordinary user, `k8py-bench` (a bearer token written into the
server's token file before it starts), not the admin: system:masters is allowed before
any authorizer looks (`authz.PrivilegedGroup`), so only an ordinary user measures RBAC.
Before the measured phases, with the admin's certificate, a ClusterRole grants it what the
bench does (get, list, watch, create, update of pods and configmaps) through a
ClusterRoleBinding, and the bench waits until SubjectAccessReviews say it is allowed. The
same user with the same flow-control share runs every configuration, so rbac=off differs
from rbac=on by the authorizer alone — decisions (`bench/authz.py` times one: ~2 µs) and
its caches: with the scheduler and controllers off, the Node authorizer's pod informer is
the only pod watcher, so every pod write is decoded for it and the server holds its
decoded events and the RBAC and pod caches (~40,000 more objects for Python's collector
to walk: longer gen-2 pauses, which set the paced load's p99). In a full server the
scheduler's and controllers' pod watches pay that decode and hold those events anyway.

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
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
from benchlib import free_port, rss_mb, stop_process
from store import start_etcd

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
    def __init__(self, url: str, context: ssl.SSLContext, token: str):
        self.url = url
        self.context = context
        self.headers = {"Authorization": f"Bearer {token}"}
        self.figures: dict[str, str] = {}  # for the table that compares configurations
        self.p99: dict[str, float] = {}  # ms per phase, for the deltas between them
        self.cpu: dict[str, float] = {}  # server CPU µs per request, per phase
        self.session = aiohttp.ClientSession(
            headers=self.headers,
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
        self.p99[label], self.cpu[label] = pct(latencies, 99), per_request
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
            headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.context, limit=0))

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
        self.p99[f"mixed load at {rate}/s"] = pct(latencies, 99)
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
        self.p99["watch fan-out"] = pct(latencies, 99)
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
    "rbac": {"off": (lambda root: ["--authorization-mode", "AlwaysAllow"], None),
             "on": (lambda root: [], None)},  # the default, Node,RBAC
    "audit": {"off": (lambda root: [], None), "on": (_audit_on, _audit_report)},
    # the store's flag is set by run_configuration (etcd needs its process started first)
    "store": {name: (lambda root: [], None) for name in ("sqlite", "memory", "etcd")},
}

BENCH_USER = "k8py-bench"
#: what the bench does, (verb, resource) in the core group: granted to BENCH_USER by RBAC
BENCH_RIGHTS = [(verb, resource) for resource in ("pods", "configmaps")
                for verb in ("get", "list", "watch", "create", "update")]
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"


def write_token_file(data_dir: str) -> str:
    """The server's token file (`authn.TokenFile`: `token,user,uid,"groups"`), written
    before it starts: the admin's token, as the server would write it, and a token for
    BENCH_USER, in no group but system:authenticated. Returns the bench user's token."""
    cred = os.path.join(data_dir, "server", "cred")
    os.makedirs(cred, mode=0o700)
    bench_token = secrets.token_urlsafe(32)
    fd = os.open(os.path.join(cred, "tokens"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'{secrets.token_urlsafe(32)},system:admin,system:admin,"system:masters"\n'
                f"{bench_token},{BENCH_USER},{BENCH_USER}\n")
    return bench_token


async def prepare(url: str, admin: ssl.SSLContext) -> None:
    """As the admin: a ClusterRole with BENCH_RIGHTS, its ClusterRoleBinding to BENCH_USER
    and the `default` ServiceAccount; then until SubjectAccessReviews say the user may do
    each (the authorizer reads RBAC from informer caches, which see writes a moment later)."""
    role = {"metadata": {"name": BENCH_USER},
            "rules": [{"apiGroups": [""], "resources": ["pods", "configmaps"],
                       "verbs": sorted({verb for verb, _ in BENCH_RIGHTS})}]}
    binding = {"metadata": {"name": BENCH_USER},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": BENCH_USER},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": BENCH_USER}]}
    # the `default` ServiceAccount that ServiceAccount admission wants for a pod: its
    # controller does not run here
    account = {"metadata": {"name": "default"}}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin)) as session:
        for path, body in ((f"{RBAC_API}/clusterroles", role),
                           (f"{RBAC_API}/clusterrolebindings", binding),
                           ("/api/v1/namespaces/default/serviceaccounts", account)):
            async with session.post(url + path, json=body) as r:
                if r.status != 201:
                    raise SystemExit(f"POST {path}: {r.status} {(await r.read())[:200]!r}")
        deadline = time.monotonic() + 30
        for verb, resource in BENCH_RIGHTS:
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                      "spec": {"user": BENCH_USER, "groups": ["system:authenticated"],
                               "resourceAttributes": {"namespace": "default", "verb": verb,
                                                      "resource": resource}}}
            while True:
                async with session.post(
                        url + "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                        json=review) as r:
                    if r.status == 201 and (await r.json())["status"].get("allowed"):
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{BENCH_USER} is still not allowed to {verb} {resource}")
                await asyncio.sleep(0.05)


async def run_configuration(args, label: str, values: dict[str, str]) -> dict[str, str]:
    root = tempfile.mkdtemp(prefix="k8py-apibench-", dir=args.dir)
    port = free_port()
    kubeconfig = os.path.join(root, "kubeconfig.yaml")
    store = values["store"]
    endpoint = {"memory": "memory://", "sqlite": ""}.get(store, "")
    etcd = None
    if store == "etcd":  # a one-member etcd on loopback, its own disk under root
        if shutil.which("etcd") is None:
            raise SystemExit("--store etcd: etcd is not installed (Debian etcd-server)")
        etcd, etcd_port = start_etcd(shutil.which("etcd"), os.path.join(root, "etcd"))
        endpoint = f"http://127.0.0.1:{etcd_port}"
    extra = [flag for axis, value in values.items() for flag in AXES[axis][value][0](root)]
    token = write_token_file(os.path.join(root, "data"))
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
        admin = ssl.create_default_context(cafile=os.path.join(tls, "server-ca.crt"))
        admin.load_cert_chain(os.path.join(tls, "client-admin.crt"),
                              os.path.join(tls, "client-admin.key"))
        url = f"https://127.0.0.1:{port}"
        await prepare(url, admin)
        print(f"API benchmark [{label}]: {url}, {store} store, {CONCURRENCY} concurrent "
              f"clients as user {BENCH_USER}")
        bench = Bench(url, context, token)
        try:
            await bench.run(args.pods, proc.pid)
        finally:
            await bench.session.close()
        stop_process(proc, timeout=20)
        for axis, value in values.items():
            report = AXES[axis][value][1]
            if report is not None:
                print(f"  {report(root)}")
        return bench
    finally:
        stop_process(proc, timeout=20)
        stop_process(etcd, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def print_deltas(results: dict[str, Bench], chosen: dict[str, list[str]]) -> None:
    """Per axis run both off and on: what on added to each phase's p99 and server CPU per
    request, one column per combination of the other axes' values."""
    for axis in chosen:
        if not {"off", "on"} <= set(chosen[axis]):
            continue
        others = [a for a in chosen if a != axis]
        pairs = {}
        for combination in itertools.product(*(chosen[a] for a in others)):
            fixed = dict(zip(others, combination))

            def label(value: str, fixed=fixed) -> str:
                return " ".join(f"{a}={fixed[a] if a != axis else value}" for a in chosen)
            pairs[" ".join(f"{a}={v}" for a, v in fixed.items()) or "-"] = (
                results[label("off")], results[label("on")])
        print(f"\n{axis} on beside off: added p99 (added server CPU per request)")
        width = max(len(f) for off, _ in pairs.values() for f in off.p99)
        print(f"  {'':<{width}}  " + "  ".join(f"{c:<24}" for c in pairs))
        for figure in next(iter(pairs.values()))[0].p99:
            cells = []
            for off, on in pairs.values():
                if figure not in on.p99 or not off.p99[figure]:
                    cells.append(f"{'-':<24}")
                    continue
                cell = f"{100 * (on.p99[figure] / off.p99[figure] - 1):+.0f}% p99"
                if figure in off.cpu and figure in on.cpu:
                    cell += f" ({on.cpu[figure] - off.cpu[figure]:+,.0f} µs)"
                cells.append(f"{cell:<24}")
            print(f"  {figure:<{width}}  " + "  ".join(cells))


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
        figures = {label: bench.figures for label, bench in results.items()}
        labels = list(figures)
        width = max(len(f) for r in figures.values() for f in r)
        columns = [max(len(label), *(len(v) for v in figures[label].values()))
                   for label in labels]
        print(f"  {'':<{width}}  " + "  ".join(f"{label:<{c}}"
                                             for label, c in zip(labels, columns)))
        for figure in figures[labels[0]]:
            print(f"  {figure:<{width}}  " + "  ".join(
                f"{figures[label].get(figure, '-'):<{c}}"
                for label, c in zip(labels, columns)))
        print_deltas(results, chosen)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--store", default="sqlite,etcd", metavar="sqlite,etcd",
                        help="stores to run (comma-separated: sqlite, memory, etcd: a "
                             "one-member local etcd through --datastore-endpoint)")
    parser.add_argument("--dir", default=os.getcwd())
    parser.add_argument("--rbac", default="off,on", metavar="off,on",
                        help="authorization configurations to run (comma-separated)")
    parser.add_argument("--audit", default="off,on", metavar="off,on",
                        help="audit configurations to run (comma-separated)")
    asyncio.run(main(parser.parse_args()))
