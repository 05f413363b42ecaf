"""Ingress benchmark: requests through the built-in ingress's reverse proxy
(`k8py.net.ingressproxy` over an `ingressrules` table) beside the same backend hit directly,
in one run. No root needed: everything is on loopback.

    .venv/bin/python bench/ingress.py [--seconds 5] [--connections 16] [--rate 500]

Three processes: the backend (`busybox httpd` serving a small file when busybox is on the
PATH, else a minimal aiohttp server), the ingress (the proxy handler and the table the
controller would build for one Ingress, host `bench.example.com` → the backend's Service;
the informers are left out: they are off the request path) and the load generator (this
process, keep-alive connections). Figures, for direct and through the ingress:
1. requests/s with CONNECTIONS connections as fast as they go;
2. p50/p99 latency at a fixed RATE requests/s (the issue's targets: ≥ 50% of direct's
   requests/s, p99 ≤ 10 ms at 500 req/s);
3. the ingress process's RSS after the load;
4. (`--agent-rss`, on by default) what the ingress adds to an agent's memory: two
   agent-like processes against a real `k8py server --disable-agent` on loopback, both with
   the agent's code and its kubelet server loaded (the metrics endpoints, /metrics and
   /metrics/resource, are part of it: always on, not a switch) and the Service and
   EndpointSlice informers the proxy and DNS share; "on" also runs the ingress controller
   (its informers on IngressClasses, Ingresses and TLS Secrets, the proxy, the listeners)
   over OBJECTS Ingresses with a TLS Secret each, after HTTP and HTTPS (SNI) requests
   through it, and scrapes its process metrics. Target: ≤ 20 MB more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import free_port, rss_mb, stop_process  # noqa: E402

HOST = "bench.example.com"


def serve_ingress(backend_port: int, port: int) -> None:
    """The ingress process: the proxy with the table for one Ingress."""
    from aiohttp import web

    from k8py.net import ingressrules
    from k8py.net.ingressproxy import ReverseProxy

    objects = {
        "classes": [{"metadata": {"name": "k8py", "annotations": {
            ingressrules.DEFAULT_CLASS_ANNOTATION: "true"}},
            "spec": {"controller": ingressrules.CONTROLLER}}],
        "ingresses": [{"metadata": {"name": "bench", "namespace": "default"}, "spec": {
            "rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}],
        "services": [{"metadata": {"name": "web", "namespace": "default"},
                      "spec": {"ports": [{"name": "http", "port": 80}]}}],
        "slices": [{"metadata": {"name": "web-1", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "web"}},
                    "ports": [{"name": "http", "port": backend_port}],
                    "endpoints": [{"addresses": ["127.0.0.1"]}]}]}
    table = ingressrules.build(*objects.values())
    proxy = ReverseProxy(lambda: table)

    async def main() -> None:
        await proxy.start()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())


def serve_agent(kubeconfig: str, ingress: bool) -> None:
    """An agent-like process (see 4. above); prints `ready <http> <https>`, then its RSS in
    MB when a line arrives on stdin."""
    import k8py.agent.daemon  # noqa: F401  the agent's code, as a real agent has it loaded
    import k8py.agent.kubelet.server  # noqa: F401  the kubelet server, metrics included
    from k8py import metrics
    from k8py.api.resources import builtin
    from k8py.client.client import Client
    from k8py.client.http import HttpTransport
    from k8py.client.informer import Informer
    from k8py.net.ingress import IngressController

    async def main() -> None:
        client = Client(HttpTransport.from_kubeconfig(kubeconfig))
        services = Informer(client, builtin("v1", "services"))
        slices = Informer(client, builtin("discovery.k8s.io/v1", "endpointslices"))
        tasks = [asyncio.create_task(i.run()) for i in (services, slices)]
        await asyncio.gather(services.synced.wait(), slices.synced.wait())
        ports = (0, 0)
        if ingress:
            controller = IngressController(client, http_port=0, https_port=0,
                                           address="127.0.0.1", secrets_client=client,
                                           informers=(services, slices))
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(controller.run(ready)))
            await ready.wait()
            while len(controller.bound) < 2:
                await asyncio.sleep(0.05)
            ports = (controller.bound["http"], controller.bound["https"])
            registry = metrics.Registry()  # a /metrics scrape, as the kubelet answers it
            registry.collectors.append(metrics.process_families)
            registry.exposition()
        print("ready", *ports, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(round(rss_mb(os.getpid()), 1), flush=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    asyncio.run(main())


async def populate(kubeconfig: str, backend_port: int, count: int) -> None:
    """`count` Services (EndpointSlices to the backend) and Ingresses, each with a TLS
    Secret for its host."""
    import base64

    from k8py.api.resources import builtin
    from k8py.client.client import Client
    from k8py.client.http import HttpTransport
    from k8py.net.ingress import fallback_certificate

    client = Client(HttpTransport.from_kubeconfig(kubeconfig))
    cert, key = fallback_certificate()
    try:
        for i in range(count):
            await client.create(builtin("v1", "services"), {
                "metadata": {"name": f"web-{i}"},
                "spec": {"ports": [{"name": "http", "port": 80}]}}, "default")
            await client.create(builtin("discovery.k8s.io/v1", "endpointslices"), {
                "metadata": {"name": f"web-{i}-1",
                             "labels": {"kubernetes.io/service-name": f"web-{i}"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": backend_port}],
                "endpoints": [{"addresses": ["127.0.0.1"],
                               "conditions": {"ready": True}}]}, "default")
            await client.create(builtin("v1", "secrets"), {
                "metadata": {"name": f"web-{i}-tls"}, "type": "kubernetes.io/tls",
                "data": {"tls.crt": base64.b64encode(cert).decode(),
                         "tls.key": base64.b64encode(key).decode()}}, "default")
            await client.create(builtin("networking.k8s.io/v1", "ingresses"), {
                "metadata": {"name": f"web-{i}"}, "spec": {
                    "ingressClassName": "k8py",
                    "tls": [{"hosts": [f"web-{i}.bench.test"], "secretName": f"web-{i}-tls"}],
                    "rules": [{"host": f"web-{i}.bench.test", "http": {"paths": [{
                        "path": "/", "pathType": "Prefix", "backend": {"service": {
                            "name": f"web-{i}", "port": {"number": 80}}}}]}}]}}, "default")
    finally:
        await client.close()


async def exercise(http_port: int, https_port: int, count: int) -> None:
    """Requests through the ingress: HTTP to every host, and an HTTPS handshake (SNI) each."""
    import ssl

    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            for i in range(count):
                async with session.get(f"http://127.0.0.1:{http_port}/index.html",
                                       headers={"Host": f"web-{i}.bench.test"}) as r:
                    await r.read()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for i in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", https_port, ssl=context,
                                                  server_hostname=f"web-{i}.bench.test")
        writer.close()


def agent_rss(args, backend_port: int) -> dict:
    root = tempfile.mkdtemp(prefix="k8py-ingressbench-")
    port = free_port()
    kubeconfig = os.path.join(root, "kubeconfig.yaml")
    server = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--data-dir",
         os.path.join(root, "data"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(port), "--write-kubeconfig", kubeconfig, "--datastore-endpoint", "memory://",
         "--disable-scheduler", "--disable-controller-manager"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(kubeconfig):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        asyncio.run(populate(kubeconfig, backend_port, args.objects))
        figures = {}
        for ingress in (False, True):
            agent = subprocess.Popen([sys.executable, __file__, "--serve-agent", kubeconfig,
                                      str(int(ingress))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            agents.append(agent)
            assert agent.stdout is not None and agent.stdin is not None
            word, http_port, https_port = agent.stdout.readline().split()
            assert word == "ready"
            if ingress:
                asyncio.run(exercise(int(http_port), int(https_port), args.objects))
            agent.stdin.write("report\n")
            agent.stdin.flush()
            figures["on" if ingress else "off"] = float(agent.stdout.readline())
        return {"agent_rss_mb_ingress_off": figures["off"],
                "agent_rss_mb_ingress_on": figures["on"],
                "ingress_adds_mb": round(figures["on"] - figures["off"], 1),
                "objects": args.objects}
    finally:
        for agent in agents:
            stop_process(agent, 5)
        stop_process(server, 20)
        shutil.rmtree(root, ignore_errors=True)


def start_backend(port: int, root: str) -> subprocess.Popen:
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("hello from the backend\n")
    busybox = shutil.which("busybox")
    if busybox:
        return subprocess.Popen([busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}",
                                 "-h", root])
    code = ("from aiohttp import web\n"
            "app = web.Application()\n"
            "app.router.add_get('/{t:.*}', lambda r: web.Response(text='hello\\n'))\n"
            f"web.run_app(app, host='127.0.0.1', port={port}, print=None, access_log=None)\n")
    return subprocess.Popen([sys.executable, "-c", code])


async def wait_port(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


async def load(url: str, seconds: float, connections: int, rate: float | None
               ) -> tuple[float, list[float], int]:
    """(requests/s, latencies in ms, failures) over `seconds`; at `rate` requests/s
    spread over the connections when given, else as fast as they go."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    interval = connections / rate if rate else 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        async def worker(offset: float) -> None:
            nonlocal failures
            next_at = time.monotonic() + offset
            while time.monotonic() < end:
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += interval
                began = time.perf_counter()
                try:
                    async with s.get(url, headers={"Host": HOST}) as response:
                        await response.read()
                        failures += response.status != 200
                except aiohttp.ClientError:
                    failures += 1
                latencies.append((time.perf_counter() - began) * 1000)
        started = time.monotonic()
        await asyncio.gather(*(worker(i * interval / connections) for i in range(connections)))
        return len(latencies) / (time.monotonic() - started), latencies, failures


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


async def measure(args) -> dict:
    results: dict = {}
    for name, port in (("direct", args.backend_port), ("ingress", args.ingress_port)):
        url = f"http://127.0.0.1:{port}/index.html"
        await load(url, 1.0, args.connections, None)  # warm-up: connections, caches
        rps, _, failed = await load(url, args.seconds, args.connections, None)
        _, latencies, failed_rate = await load(url, args.seconds, args.connections,
                                               args.rate)
        results[name] = {"requests_per_s": round(rps), "failures": failed + failed_rate,
                         f"p50_ms_at_{args.rate}": round(percentile(latencies, 0.5), 2),
                         f"p99_ms_at_{args.rate}": round(percentile(latencies, 0.99), 2)}
    results["ingress_vs_direct"] = round(results["ingress"]["requests_per_s"]
                                         / max(1, results["direct"]["requests_per_s"]), 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--objects", type=int, default=50,
                        help="Ingresses (each with a Service and a TLS Secret) for 4.")
    parser.add_argument("--no-agent-rss", dest="agent_rss", action="store_false")
    parser.add_argument("--serve-ingress", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-agent", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ingress:
        serve_ingress(*args.serve_ingress)
        return
    if args.serve_agent:
        serve_agent(args.serve_agent[0], args.serve_agent[1] == "1")
        return
    args.backend_port, args.ingress_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as root:
        backend = start_backend(args.backend_port, root)
        ingress = subprocess.Popen([sys.executable, __file__, "--serve-ingress",
                                    str(args.backend_port), str(args.ingress_port)],
                                   stdout=subprocess.PIPE, text=True)
        try:
            asyncio.run(wait_port(args.backend_port))
            assert ingress.stdout is not None and ingress.stdout.readline().strip() == "ready"
            results = asyncio.run(measure(args))
            results["ingress_rss_mb"] = round(rss_mb(ingress.pid), 1)
            results["backend"] = "busybox httpd" if shutil.which("busybox") else "aiohttp"
            if args.agent_rss:
                results["agent_rss"] = agent_rss(args, args.backend_port)
            print(json.dumps(results, indent=2))
        finally:
            stop_process(ingress, 5)
            stop_process(backend, 5)


if __name__ == "__main__":
    main()
