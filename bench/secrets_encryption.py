"""Secrets encryption at rest: what each provider costs, against real `k8py server` processes.

    .venv/bin/python bench/secrets_encryption.py [--secrets 2000] [--store sqlite|memory]

For each of: no encryption configuration (the raw fast path), `identity` (configured, so
every read goes through the transformer chain), `aescbc`, `aesgcm` and `secretbox`, one
server (`--encryption-provider-config`, `--disable-agent --disable-scheduler
--disable-controller-manager`) gets Secrets of ~1 KB of data from 32 concurrent clients:
create and get throughput with p50/p99 latency, and a LIST of all of them. The providers take
turns for `--rounds` rounds and each line is a provider's best round: on a shared 2-core
machine (the load generator runs beside the server, as in `bench/apiserver.py`) the best of a
few is steadier than any one. First, the transformers alone in this process: µs per seal and
per open of one such Secret.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from apiserver import CONCURRENCY, pct
from benchlib import free_port, stop_process

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROVIDERS = ("none", "identity", "aescbc", "aesgcm", "secretbox")
SECRETS = "/api/v1/namespaces/default/secrets"


def secret(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": {"app": "bench"}},
            "type": "Opaque",
            "data": {f"key{i}": base64.b64encode(os.urandom(96)).decode() for i in range(8)}}


def config_for(provider: str) -> dict:
    first = {"identity": {}} if provider == "identity" else {provider: {"keys": [
        {"name": "bench", "secret": base64.b64encode(os.urandom(32)).decode()}]}}
    return {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"],
                           "providers": [first] + ([{"identity": {}}]
                                                   if provider != "identity" else [])}]}


def transformers_alone() -> None:
    from k8py.api.resources import builtin
    from k8py.server.apiserver.encryptionconfig import parse

    data = json.dumps(secret("s")).encode()
    key = b"/registry/core/secrets/default/s"
    print(f"transformers in process, one Secret of {len(data)} bytes:")
    for provider in PROVIDERS[1:]:
        t = parse(json.dumps(config_for(provider)).encode()).transformer(
            builtin("v1", "secrets"))
        n = 20000
        start = time.perf_counter()
        for _ in range(n):
            sealed = t.to_storage(data, key)
        seal = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n):
            t.from_storage(sealed, key)
        opened = (time.perf_counter() - start) / n * 1e6
        print(f"  {provider:<10} seal {seal:5.1f} µs   open {opened:5.1f} µs   "
              f"stored {len(sealed)} bytes")


async def timed(session, method: str, url: str, body=None) -> float:
    start = time.perf_counter()
    async with session.request(method, url, json=body) as response:
        payload = await response.read()
        if response.status not in (200, 201):
            raise SystemExit(f"{method} {url}: {response.status} {payload[:200]!r}")
    return time.perf_counter() - start


async def phase(count: int, request) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    latencies: list[float] = []
    work = iter(range(count))

    async def worker():
        for i in work:
            latencies.append(await request(i))
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    return count / elapsed, pct(latencies, 50), pct(latencies, 99)


def shown(label: str, figures: tuple[float, float, float]) -> str:
    rate, p50, p99 = figures
    return f"{label} {rate:6,.0f}/s p50 {p50:5.1f} ms p99 {p99:5.1f} ms"


async def one_server(provider: str, count: int, store: str, root: str) -> tuple:
    """(create figures, get figures, list ms) of one server."""
    folder = tempfile.mkdtemp(prefix=provider, dir=root)
    kubeconfig, port = os.path.join(folder, "kubeconfig.yaml"), free_port()
    extra = []
    if provider != "none":
        path = os.path.join(folder, "encryption.json")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            json.dump(config_for(provider), f)
        extra = ["--encryption-provider-config", path]
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--disable-scheduler",
         "--disable-controller-manager", "--data-dir", os.path.join(folder, "data"),
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port),
         "--write-kubeconfig", kubeconfig,
         "--datastore-endpoint", "memory://" if store == "memory" else "", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(kubeconfig):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server ({provider}) did not start")
            await asyncio.sleep(0.1)
        tls = os.path.join(folder, "data", "server", "tls")
        context = ssl.create_default_context(cafile=os.path.join(tls, "server-ca.crt"))
        context.load_cert_chain(os.path.join(tls, "client-admin.crt"),
                                os.path.join(tls, "client-admin.key"))
        base = f"https://127.0.0.1:{port}{SECRETS}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                ssl=context, limit=CONCURRENCY * 2)) as session:
            created = await phase(count, lambda i: timed(
                session, "POST", base, secret(f"s{i:05}")))
            got = await phase(count * 2, lambda i: timed(
                session, "GET", f"{base}/s{i % count:05}"))
            lists = [await timed(session, "GET", base) for _ in range(5)]
        return created, got, statistics.median(lists) * 1000
    finally:
        stop_process(proc, timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


async def main(args) -> None:
    transformers_alone()
    print(f"API server, {args.store} store, {args.secrets} Secrets, {CONCURRENCY} clients, "
          f"best of {args.rounds} rounds:")
    root = tempfile.mkdtemp(prefix="k8py-encbench-", dir=args.dir)
    best: dict[str, list] = {}
    try:
        for _ in range(args.rounds):
            for provider in PROVIDERS:
                created, got, listed = await one_server(provider, args.secrets, args.store,
                                                        root)
                mine = best.setdefault(provider, [created, got, listed])
                mine[0] = max(mine[0], created)
                mine[1] = max(mine[1], got)
                mine[2] = min(mine[2], listed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for provider, (created, got, listed) in best.items():
        print(f"  {provider:<10} {shown('create', created)}   {shown('get', got)}   "
              f"list {listed:4.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=2000)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=os.getcwd())
    asyncio.run(main(parser.parse_args()))
