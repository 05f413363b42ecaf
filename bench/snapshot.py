"""Snapshot benchmark: how long a snapshot and a restore of 10,000 objects take (SQLite, etcd).

    .venv/bin/python bench/snapshot.py [--dir DIR] [--objects N] [--size BYTES] [--no-etcd]

Fills a fresh SQLite store (in DIR, default the current folder's file system: fsync on tmpfs
costs nothing) with N objects of SIZE bytes (default 10,000 of 2 KiB, about a small cluster's
worth), some updated so the file holds history, then measures:
  - save: `SQLiteSnapshots.save` (the online backup API, one step), with the store open
  - save under writes: the same while a writer keeps updating keys, and how many writes
    completed meanwhile (a snapshot must not stall the server)
  - restore: `SQLiteSnapshots.restore` (check, offline compaction, VACUUM, swap)
  - peer: `sqlite3 <db> ".backup FILE"`, the SQLite shell's own backup, when the shell is on
    the PATH
Then the same objects in a one-member etcd (Debian's etcd, started here on loopback ports and
stopped at the end), unless --no-etcd or etcd is not installed:
  - save: `EtcdSnapshots.save` (Maintenance.Snapshot streamed to a file, sha256 checked)
  - restore: `restore_member` (etcdctl snapshot restore into a new member data dir, swap)
  - peer: `etcdctl snapshot save`
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

from k8py.server.store.sqlite import SQLiteBackend  # noqa: E402
from k8py.server.store.snapshot import SQLiteSnapshots  # noqa: E402
from k8py.server.store import open_backend  # noqa: E402
from k8py.server.store.etcdsnapshot import EtcdSnapshots, Member, restore_member  # noqa: E402
from k8py.server.store.etcdclient import parse_endpoints  # noqa: E402


async def fill(store, objects: int, size: int) -> None:
    value = b"x" * size
    batch = 500
    for start in range(0, objects, batch):
        await asyncio.gather(*(store.create(f"/registry/configmaps/bench/cm{i}", value)
                               for i in range(start, min(start + batch, objects))))
    for i in range(0, objects, 10):  # some history
        key = f"/registry/configmaps/bench/cm{i}"
        kv = await store.get(key)
        await store.update(key, value[:-1] + b"y", mod_revision=kv.mod_revision)


async def main(args) -> None:
    folder = tempfile.mkdtemp(prefix="k8py-bench-snapshot-", dir=args.dir)
    try:
        db = os.path.join(folder, "db", "state.db")
        store = SQLiteBackend(db, retain=1_000_000)
        await store.start()
        started = time.perf_counter()
        await fill(store, args.objects, args.size)
        print(f"filled {args.objects} objects of {args.size} B in "
              f"{time.perf_counter() - started:.1f}s (revision {store.revision})")
        snapshots = SQLiteSnapshots(db)
        target = os.path.join(folder, "snap")

        started = time.perf_counter()
        revision = await snapshots.save(target)
        saved = time.perf_counter() - started
        size_mb = os.path.getsize(target) / 1e6
        print(f"save:               {saved * 1000:8.1f} ms  ({size_mb:.1f} MB, revision "
              f"{revision})")

        stop = asyncio.Event()
        writes = 0

        async def writer() -> None:
            nonlocal writes
            i = 0
            while not stop.is_set():
                key = f"/registry/configmaps/bench/cm{i % args.objects}"
                kv = await store.get(key)
                await store.update(key, kv.value, mod_revision=kv.mod_revision)
                writes += 1
                i += 1

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.2)
        before = writes
        started = time.perf_counter()
        await snapshots.save(target + "-busy")
        busy = time.perf_counter() - started
        during = writes - before
        stop.set()
        await task
        print(f"save under writes:  {busy * 1000:8.1f} ms  ({during} durable writes "
              "completed meanwhile)")
        await store.close()

        started = time.perf_counter()
        restored = await snapshots.restore(target)
        took = time.perf_counter() - started
        print(f"restore:            {took * 1000:8.1f} ms  ({restored.keys} keys, store "
              f"continues at {restored.revision})")

        if shutil.which("sqlite3"):
            started = time.perf_counter()
            subprocess.run(["sqlite3", db, f".backup {target}-shell"], check=True)
            print(f"peer sqlite3 .backup: {(time.perf_counter() - started) * 1000:6.1f} ms")
        else:
            print("peer sqlite3 .backup: skipped (no sqlite3 on the PATH)")
        if args.no_etcd or not shutil.which("etcd"):
            print("etcd: skipped")
        else:
            await bench_etcd(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bench_etcd(folder: str, args) -> None:
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    member = Member(os.path.join(folder, "etcd", "bench"), "bench", peer_url)
    log = open(os.path.join(folder, "etcd.log"), "wb")
    etcd = subprocess.Popen(
        ["etcd", "--name", member.name, "--data-dir", member.data_dir,
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"{member.name}={peer_url}", "--logger", "zap",
         "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        store = open_backend(client_url, folder)
        await store.start()
        try:
            started = time.perf_counter()
            await fill(store, args.objects, args.size)
            print(f"etcd: filled {args.objects} objects in {time.perf_counter() - started:.1f}s "
                  f"(revision {store.revision})")
        finally:
            await store.close()
        snapshots = EtcdSnapshots(parse_endpoints(client_url), member=member)
        target = os.path.join(folder, "etcd-snap")
        started = time.perf_counter()
        revision = await snapshots.save(target)
        print(f"etcd save:          {(time.perf_counter() - started) * 1000:8.1f} ms  "
              f"({os.path.getsize(target) / 1e6:.1f} MB, revision >= {revision})")
        started = time.perf_counter()
        subprocess.run(["etcdctl", "--endpoints", client_url, "snapshot", "save",
                        target + "-etcdctl"], check=True, capture_output=True,
                       env={**os.environ, "ETCDCTL_API": "3"})
        print(f"peer etcdctl snapshot save: {(time.perf_counter() - started) * 1000:6.1f} ms")
    finally:
        etcd.terminate()
        etcd.wait(timeout=30)
        log.close()
    started = time.perf_counter()
    restored = await asyncio.to_thread(restore_member, member, target)
    print(f"etcd restore:       {(time.perf_counter() - started) * 1000:8.1f} ms  "
          f"({restored.keys} keys, continues at revision {restored.revision})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="folder on the file system to measure")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--no-etcd", action="store_true", help="SQLite only")
    asyncio.run(main(parser.parse_args()))
