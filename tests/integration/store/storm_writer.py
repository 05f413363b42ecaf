"""A write storm against a SQLite store, for the kill-and-restart test.

Run as `python -m tests.integration.store.storm_writer DB_PATH WRITERS`. Each of WRITERS tasks
creates and updates its own keys forever; every acknowledged write is printed as
`ack <key> <mod_revision> <value>` and flushed, so the parent knows exactly what was promised.
"""

from __future__ import annotations

import asyncio
import sys

from k8py.server.store.sqlite import SQLiteBackend


async def writer(store: SQLiteBackend, n: int) -> None:
    i = 0
    while True:
        key = f"/storm/{n}/{i % 50}"
        value = f"{n}-{i}".encode() * 20
        current = await store.get(key)
        if current is None:
            kv = await store.create(key, value)
        else:
            kv = await store.update(key, value, mod_revision=current.mod_revision)
        sys.stdout.write(f"ack {key} {kv.mod_revision} {value.decode()[: len(f'{n}-{i}')]}\n")
        sys.stdout.flush()
        i += 1


async def main(path: str, writers: int) -> None:
    store = SQLiteBackend(path)
    await store.start()
    print("ready", flush=True)
    await asyncio.gather(*(writer(store, n) for n in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
