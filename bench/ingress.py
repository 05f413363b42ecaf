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
3. the ingress process's RSS after the load.
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
    parser.add_argument("--serve-ingress", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ingress:
        serve_ingress(*args.serve_ingress)
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
            print(json.dumps(results, indent=2))
        finally:
            stop_process(ingress, 5)
            stop_process(backend, 5)


if __name__ == "__main__":
    main()
