"""A watch costs what it sends, not a copy of the collection: `k8py server` as a process,
its resident memory read from /proc while 200 clients watch 1 MB of ConfigMaps from "now"
(no resourceVersion: every watch first gets the whole collection)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys

import aiohttp

from tests.conftest import eventually, stop_process
from tests.integration.inloop import free_port

WATCHES = 200
CONFIGMAPS = 100  # x 10 kB = 1 MB


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_200_watches_over_1mb_cost_little_and_give_it_back(tmp_path):
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--disable-scheduler",
         "--disable-controller-manager", "--data-dir", str(tmp_path / "data"),
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port),
         "--write-kubeconfig", str(kubeconfig)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await eventually(lambda: kubeconfig.exists() or proc.poll() is not None, timeout=30,
                         what="the server to start")
        assert proc.poll() is None
        tls = tmp_path / "data" / "server" / "tls"
        context = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
        context.load_cert_chain(str(tls / "client-admin.crt"), str(tls / "client-admin.key"))
        url = f"https://127.0.0.1:{port}/api/v1/namespaces/default/configmaps"
        connector = aiohttp.TCPConnector(ssl=context, limit=WATCHES + 10)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(CONFIGMAPS):
                async with session.post(url, json={"metadata": {"name": f"cm{i:03}"},
                                                   "data": {"v": "x" * 10_000}}) as r:
                    assert r.status == 201
            async with session.get(url) as r:  # warm: the first LIST's buffers
                await r.read()
            before = _rss_mb(proc.pid)

            async def watch(received: asyncio.Event, done: asyncio.Event) -> None:
                async with session.get(url, params={"watch": "true"},
                                       timeout=aiohttp.ClientTimeout(total=None)) as r:
                    assert r.status == 200
                    for _ in range(CONFIGMAPS):
                        event = json.loads(await r.content.readline())
                        assert event["type"] == "ADDED"
                    received.set()
                    await done.wait()

            done = asyncio.Event()
            received = [asyncio.Event() for _ in range(WATCHES)]
            tasks = [asyncio.create_task(watch(e, done)) for e in received]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in received)), 120)
            during = _rss_mb(proc.pid)
            done.set()
            await asyncio.gather(*tasks)
        # the server frees a watch when its client leaves
        await asyncio.sleep(1)
        after = _rss_mb(proc.pid)
        print(f"server RSS: {before:.1f} MB before, {during:.1f} MB with {WATCHES} watches, "
              f"{after:.1f} MB after")
        assert during - before < 30, (before, during)
        assert after - before < 10, (before, after)
    finally:
        stop_process(proc)
