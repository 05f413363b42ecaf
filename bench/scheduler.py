"""Scheduler and control-loop benchmark on simulated nodes.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--pods 10000]
                                        [--skip-throughput] [--skip-cluster]

1. Scheduling throughput, in process (API server on a SQLite store in a temp dir, the
   scheduler on the in-process transport, as `k8py server` runs them): nodes are registered
   and pods created first, then the scheduler starts; pods/s is bound pods over the time to
   bind them all (every binding is a durable store write). Once with plain pods, once with
   required pod anti-affinity (groups of pods that must not share a node: `--pods / --nodes`
   groups, so every pod fits exactly).
2. A real `k8py server --disable-agent` process and simulated nodes in this process over
   HTTPS: time from creating a 1,000-replica Deployment to all its pods Running on 100
   nodes; then with `--nodes` nodes and the Deployment scaled to `--pods`, the server's
   resident memory (VmRSS).

The load generator (and the simulated kubelets) share the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import free_port, rss_mb, stop_process  # noqa: E402
from k8py.agent.simulated import SimulatedNodes, node_object  # noqa: E402
from k8py.api.resources import Registry, builtin  # noqa: E402
from k8py.client.client import Client  # noqa: E402
from k8py.client.http import HttpTransport  # noqa: E402
from k8py.client.informer import Informer, SharedInformers  # noqa: E402
from k8py.server.apiserver import app as apiserver  # noqa: E402
from k8py.server.apiserver.authn import TokenFile  # noqa: E402
from k8py.server.apiserver.inprocess import InProcessTransport  # noqa: E402
from k8py.server.daemon import bootstrap  # noqa: E402
from k8py.server.scheduler.scheduler import Scheduler  # noqa: E402
from k8py.server.store import open_backend  # noqa: E402

PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")
DEPLOYMENTS = builtin("apps/v1", "deployments")
CONCURRENCY = 64


def bench_pod(name: str, labels: dict, affinity: dict | None = None) -> dict:
    spec = {"containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    if affinity:
        spec["affinity"] = affinity
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": spec}


async def gather_limited(count: int, make) -> None:
    queue = iter(range(count))

    async def worker():
        for i in queue:
            await make(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def scheduling_throughput(root: str, nodes: int, pods: int, anti_affinity: bool) -> None:
    data_dir = os.path.join(root, "anti" if anti_affinity else "plain")
    os.makedirs(os.path.join(data_dir, "server"), mode=0o700)
    store = open_backend("", data_dir)
    await store.start()
    try:
        registry = Registry()
        await bootstrap(store, registry)
        tokens = TokenFile.ensure(os.path.join(data_dir, "server", "tokens"), "bench", ())
        # no service-account controller runs here: pods go without their accounts
        app = apiserver.make_app(store, tokens, registry,
                                 disable_admission_plugins=("ServiceAccount",))
        client = Client(InProcessTransport(app[apiserver.REST_KEY]))
        await gather_limited(nodes, lambda i: client.create(
            NODES, node_object(f"sim-node-{i}", i, "32", "256Gi", 110)))
        groups = max(1, pods // nodes)

        def make(i: int):
            if not anti_affinity:
                return client.create(PODS, bench_pod(f"pod-{i}", {"app": "bench"}))
            group = f"g{i % groups}"
            affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"group": group}},
                 "topologyKey": "kubernetes.io/hostname"}]}}
            return client.create(PODS, bench_pod(f"pod-{i}", {"group": group}, affinity))

        await gather_limited(pods, make)
        informers = SharedInformers(client)
        scheduler = Scheduler(client, informers)
        informers.start()
        await informers.wait_synced()
        started = time.perf_counter()
        task = asyncio.create_task(scheduler.run())
        while scheduler.scheduled < pods:
            if task.done():
                task.result()
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {scheduler.scheduled} of {pods} pods bound in 600 s")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await informers.stop()
        label = "required anti-affinity" if anti_affinity else "plain pods"
        print(f"  {label:<24} {pods:,} pods over {nodes:,} nodes in {elapsed:6.1f} s: "
              f"{pods / elapsed:7,.0f} pods/s")
    finally:
        await store.close()


def deployment(replicas: int) -> dict:
    labels = {"app": "bench"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": bench_pod("x", labels)["spec"]}}}


async def cluster_figures(root: str, nodes: int, pods: int) -> None:
    port = free_port()
    kubeconfig = os.path.join(root, "kubeconfig.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--data-dir",
         os.path.join(root, "cluster"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(port), "--write-kubeconfig", kubeconfig],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tasks: list[asyncio.Task] = []
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(kubeconfig):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start")
            await asyncio.sleep(0.1)
        client = Client(HttpTransport.from_kubeconfig(kubeconfig, "k8py-bench"))
        print(f"  server RSS at start: {rss_mb(proc.pid):.0f} MB")
        first = SimulatedNodes(client, 100, prefix="a", start_delay=0.0, heartbeat=10.0,
                               status_interval=600.0)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(first.run(ready)))
        await ready.wait()
        running = Informer(client, PODS, label_selector="app=bench")
        tasks.append(asyncio.create_task(running.run()))
        await running.synced.wait()

        def count_running() -> int:
            return sum(1 for p in running.list()
                       if (p.get("status") or {}).get("phase") == "Running")

        async def wait_running(count: int, limit: float) -> float:
            began = time.perf_counter()
            while count_running() < count:
                if time.perf_counter() - began > limit:
                    raise SystemExit(f"only {count_running()} of {count} pods Running "
                                     f"after {limit:.0f} s")
                await asyncio.sleep(0.05)
            return time.perf_counter() - began

        began = time.perf_counter()
        await client.create(DEPLOYMENTS, deployment(1000))
        await wait_running(1000, 300)
        print(f"  1,000-replica Deployment on 100 nodes: all Running "
              f"{time.perf_counter() - began:5.1f} s after create   "
              f"(server RSS {rss_mb(proc.pid):.0f} MB)")
        more = SimulatedNodes(client, nodes - 100, prefix="b", start_delay=0.0,
                              heartbeat=10.0, status_interval=600.0)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(more.run(ready)))
        await ready.wait()
        began = time.perf_counter()
        await client.patch(DEPLOYMENTS, "bench", {"spec": {"replicas": pods}}, "default")
        await wait_running(pods, 900)
        print(f"  scaled to {pods:,} replicas on {nodes:,} nodes: all Running in "
              f"{time.perf_counter() - began:5.1f} s")
        await asyncio.sleep(5)  # let in-flight events settle before reading memory
        print(f"  server RSS with {nodes:,} nodes and {pods:,} pods: {rss_mb(proc.pid):.0f} MB")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    finally:
        stop_process(proc)


async def main(args) -> None:
    root = tempfile.mkdtemp(prefix="k8py-schedbench-", dir=args.dir)
    try:
        if not args.skip_throughput:
            print(f"scheduler throughput (in process, SQLite store in {root}):")
            await scheduling_throughput(root, args.nodes, args.pods, anti_affinity=False)
            await scheduling_throughput(root, args.nodes, args.pods, anti_affinity=True)
        if not args.skip_cluster:
            print("cluster (k8py server process, simulated nodes over HTTPS):")
            await cluster_figures(root, args.nodes, args.pods)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--dir", default=os.getcwd())
    asyncio.run(main(parser.parse_args()))
