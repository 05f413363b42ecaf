"""Store benchmark: durable write rates, read rates, watch latency, size after churn.

    .venv/bin/python bench/store.py [--dir DIR] [--quick]

Runs against the SQLite backend in a fresh folder on DIR's file system (default: the current
folder's, which should be a real disk: fsync on tmpfs costs nothing). When `etcd` is on the
PATH (Debian's etcd-server), it also runs the same write workload against a real etcd on
loopback, through its gRPC KV API, and prints the ratio; and the whole k8py workload (writes,
reads, watch latency) on k8py's etcd backend over a one-member local etcd.

What is measured (all writes durable: acknowledged only after fsync):
  - writes/s, 1 KiB values: one writer awaiting each write; 64 concurrent writers
  - gets/s (one at a time and 64 concurrent), ranges/s (500 of 1,000 keys per page)
  - watch delivery latency p50/p99 with 100 watchers: from just before a write is issued to
    each watcher receiving its event (so it includes the fsync)
  - database and WAL size after 200,000 updates spread over 1,000 keys (random order), against
    the live data (keys + values), and the largest WAL seen during the churn

The k8py store is measured in-process, the way the API server uses it; etcd is measured
through a Python gRPC client (grpcio), the way a remote API server uses it. The client's own
cost is part of etcd's figure; the comparison says which one a k8py server would be faster on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k8py.server.store.backend import Unavailable  # noqa: E402
from k8py.server.store.etcd import EtcdBackend  # noqa: E402
from k8py.server.store.etcdclient import Endpoint  # noqa: E402
from k8py.server.store.sqlite import SQLiteBackend  # noqa: E402

VALUE = b"x" * 1024
WRITERS = 64


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10,.0f}/s"


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- k8py ------------------------------------------------------------------------------------


async def k8py_writes(store: SQLiteBackend, sequential: int, concurrent: int) -> dict:
    start = time.perf_counter()
    for i in range(sequential):
        await store.create(f"/bench/seq/{i:06}", VALUE)
    seq = time.perf_counter() - start

    per_writer = concurrent // WRITERS

    async def writer(n: int) -> None:
        for i in range(per_writer):
            await store.create(f"/bench/conc/{n:02}/{i:06}", VALUE)

    start = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    conc = time.perf_counter() - start
    return {"sequential": sequential / seq, "concurrent": per_writer * WRITERS / conc}


async def k8py_reads(store: SQLiteBackend, gets: int, ranges: int) -> None:
    for i in range(1000):
        await store.create(f"/bench/read/{i:04}", VALUE)
    keys = [f"/bench/read/{random.randrange(1000):04}" for _ in range(gets)]
    start = time.perf_counter()
    for key in keys:
        await store.get(key)
    print(f"  get, one at a time       {rate(gets, time.perf_counter() - start)}")

    async def getter(chunk):
        for key in chunk:
            await store.get(key)

    start = time.perf_counter()
    await asyncio.gather(*(getter(keys[n::WRITERS]) for n in range(WRITERS)))
    print(f"  get, 64 concurrent       {rate(gets, time.perf_counter() - start)}")
    start = time.perf_counter()
    for _ in range(ranges):
        page = await store.range("/bench/read/", limit=500)
        assert len(page.items) == 500
    print(f"  range of 500 keys        {rate(ranges, time.perf_counter() - start)}")


async def k8py_watch_latency(store: SQLiteBackend, watchers: int, writes: int) -> None:
    issued: dict[str, float] = {}
    latencies: list[float] = []
    streams = [store.watch("/bench/watch/") for _ in range(watchers)]

    async def consume(stream):
        seen = 0
        async for events in stream:
            now = time.perf_counter()
            for event in events:
                latencies.append(now - issued[event.kv.key])
            seen += len(events)
            if seen >= writes:
                return

    consumers = [asyncio.create_task(consume(s)) for s in streams]
    for i in range(writes):
        key = f"/bench/watch/{i:06}"
        issued[key] = time.perf_counter()
        await store.create(key, VALUE)
        await asyncio.sleep(0.001)  # a steady trickle, not a flood: latency, not throughput
    await asyncio.wait_for(asyncio.gather(*consumers), 60)
    for s in streams:
        s.close()
    ms = [x * 1000 for x in latencies]
    print(
        f"  watch latency, {watchers} watchers, {writes} writes: "
        f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
        f"max {max(ms):.2f} ms ({len(ms):,} deliveries)"
    )


async def k8py_churn(path: str, keys: int, updates: int) -> None:
    store = SQLiteBackend(path)
    await store.start()
    revisions = {}
    for i in range(keys):
        revisions[i] = (await store.create(f"/bench/churn/{i:04}", VALUE)).mod_revision
    wal_peak = 0
    stop = asyncio.Event()

    async def sample_wal():
        nonlocal wal_peak
        while not stop.is_set():
            wal_peak = max(wal_peak, (await store.stats()).wal_bytes)
            await asyncio.sleep(0.05)

    # 64 writers, each updating random keys among its own, so compare-and-swap never fails.
    async def writer(n: int) -> None:
        mine = list(range(n, keys, WRITERS))
        for _ in range(updates // WRITERS):
            i = random.choice(mine)
            kv = await store.update(f"/bench/churn/{i:04}", VALUE, mod_revision=revisions[i])
            revisions[i] = kv.mod_revision

    sampler = asyncio.create_task(sample_wal())
    start = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    elapsed = time.perf_counter() - start
    # Let the background compaction catch up, as it would on an idle server.
    deadline = time.monotonic() + 30
    while store.compact_revision < store.revision - store.retain and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    # ... and give its free pages back: wait until the file stops shrinking.
    previous = -1
    while time.monotonic() < deadline:
        await asyncio.sleep(2 * store.compact_interval)
        size = (await store.stats()).db_bytes
        if size == previous:
            break
        previous = size
    stop.set()
    await sampler
    stats = await store.stats()
    live = sum(len(f"/bench/churn/{i:04}") + len(VALUE) for i in range(keys))
    total = updates + keys
    print(
        f"  churn: {updates:,} updates over {keys:,} keys in {elapsed:.1f} s "
        f"({total / elapsed:,.0f} writes/s); history kept: {store.retain:,} revisions"
    )
    print(
        f"  after churn: db {stats.db_bytes / 1e6:.2f} MB, WAL {stats.wal_bytes / 1e6:.2f} MB, "
        f"live data {live / 1e6:.2f} MB -> db is {stats.db_bytes / live:.2f}x live; "
        f"largest WAL seen {wal_peak / 1e6:.2f} MB"
    )
    await store.close()


# --- etcd ------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key: 1, value: 2}, encoded by hand: no generated code needed."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(etcd: str, data_dir: str) -> tuple[subprocess.Popen, int]:
    """A one-member etcd on loopback (plain gRPC); (process, client port)."""
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [
            etcd, "--name", "bench", "--data-dir", data_dir,
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, client


async def k8py_over_etcd(data_dir: str, sequential: int, concurrent: int, scale: int
                         ) -> dict | None:
    """The k8py store contract on the etcd backend (what `--datastore-endpoint` runs):
    the same workload as SQLite's, through k8py's own gRPC client."""
    etcd = shutil.which("etcd")
    if etcd is None:
        return None
    proc, port = start_etcd(etcd, data_dir)
    store = EtcdBackend([Endpoint("127.0.0.1", port, False)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await store.start()
                break
            except Unavailable:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("  etcd did not start")
                    return None
        figures = await k8py_writes(store, sequential, concurrent)
        print(f"  writes, sequential       {figures['sequential']:10,.0f}/s")
        print(f"  writes, {WRITERS} concurrent    {figures['concurrent']:10,.0f}/s")
        await k8py_reads(store, 20_000 // scale, 500 // scale)
        await k8py_watch_latency(store, 100, 2000 // scale)
        return figures
    finally:
        await store.close()
        proc.terminate()
        proc.wait(timeout=10)


async def etcd_writes(data_dir: str, sequential: int, concurrent: int) -> dict | None:
    etcd = shutil.which("etcd")
    if etcd is None:
        print("  etcd not installed (Debian etcd-server): no comparison")
        return None
    try:
        import grpc
    except ImportError:
        print("  grpcio not installed (pip install '.[bench]'): no comparison")
        return None
    proc, client = start_etcd(etcd, data_dir)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{client}") for _ in range(8)]
    try:
        puts = [c.unary_unary("/etcdserverpb.KV/Put") for c in channels]
        deadline = time.monotonic() + 20
        while True:
            try:
                await puts[0](put_request(b"/warmup", b"x"), timeout=1)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("  etcd did not start: no comparison")
                    return None
                await asyncio.sleep(0.1)
        start = time.perf_counter()
        for i in range(sequential):
            await puts[0](put_request(f"/bench/seq/{i:06}".encode(), VALUE))
        seq = time.perf_counter() - start

        per_writer = concurrent // WRITERS

        async def writer(n: int) -> None:
            put = puts[n % len(puts)]
            for i in range(per_writer):
                await put(put_request(f"/bench/conc/{n:02}/{i:06}".encode(), VALUE))

        start = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        conc = time.perf_counter() - start
        return {"sequential": sequential / seq, "concurrent": per_writer * WRITERS / conc}
    finally:
        for c in channels:
            await c.close()
        proc.terminate()
        proc.wait(timeout=10)


# --- main ------------------------------------------------------------------------------------


async def main(args) -> None:
    root = tempfile.mkdtemp(prefix="k8py-bench-", dir=args.dir)
    fs = subprocess.run(["stat", "-f", "-c", "%T", root], capture_output=True, text=True)
    print(f"store benchmark in {root} ({fs.stdout.strip()}), 1 KiB values, durable writes")
    scale = 4 if args.quick else 1
    sequential, concurrent = 2000 // scale, 32_000 // scale
    try:
        store = SQLiteBackend(os.path.join(root, "k8py", "state.db"))
        await store.start()
        print("k8py (sqlite):")
        ours = await k8py_writes(store, sequential, concurrent)
        print(f"  writes, sequential       {ours['sequential']:10,.0f}/s")
        print(f"  writes, {WRITERS} concurrent    {ours['concurrent']:10,.0f}/s")
        await k8py_reads(store, 20_000 // scale, 500 // scale)
        await k8py_watch_latency(store, 100, 2000 // scale)
        await store.close()
        await k8py_churn(os.path.join(root, "churn", "state.db"), 1000, 200_000 // scale)

        print("k8py (etcd backend: one local etcd member, k8py's gRPC client):")
        over = await k8py_over_etcd(os.path.join(root, "etcd-k8py"), sequential, concurrent,
                                    scale)
        print("etcd (same write workload, gRPC on loopback):")
        theirs = await etcd_writes(os.path.join(root, "etcd"), sequential, concurrent)
        if theirs and over:
            for kind in ("sequential", "concurrent"):
                print(f"  k8py-over-etcd writes, {kind:<11} {over[kind]:10,.0f}/s   "
                      f"of raw etcd: {over[kind] / theirs[kind]:.2f}x")
        if theirs:
            for kind in ("sequential", "concurrent"):
                print(
                    f"  writes, {kind:<16} {theirs[kind]:10,.0f}/s   "
                    f"k8py/etcd = {ours[kind] / theirs[kind]:.2f}x"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.getcwd(), help="folder on the disk to measure")
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    asyncio.run(main(parser.parse_args()))
