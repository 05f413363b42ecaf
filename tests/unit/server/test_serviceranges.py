"""The stored range bitmaps: compare-and-swap between two owners of one key, dry runs, repair
with upstream's leak grace."""

from __future__ import annotations

import asyncio
import base64
import json

from k8py.server.apiserver.serviceranges import LEAK_REPAIRS, StoredRange
from k8py.server.store.memory import MemoryBackend


def ranges(backend, count=2):
    return [StoredRange(backend, "/registry/ranges/test", "1-64", 1, 64, 8)
            for _ in range(count)]


async def test_two_owners_racing_never_take_one_value_twice():
    backend = MemoryBackend()
    await backend.start()
    one, two = ranges(backend)
    got = await asyncio.gather(*(r.take_next() for _ in range(40) for r in (one, two)))
    values = [v for v in got if v is not None]
    assert len(values) == len(set(values)) == 64 and got.count(None) == 16
    assert not await one.take(5) and await one.take_next() is None
    await two.release({5, 6})
    assert await one.take(5) and not await two.take(5)
    doc = json.loads((await backend.get("/registry/ranges/test")).value)
    bits = int.from_bytes(base64.b64decode(doc["data"]), "big")
    assert doc["range"] == "1-64" and bits == (1 << 64) - 1 - (1 << 5)  # 6 is free


async def test_a_dry_run_reserves_nothing():
    backend = MemoryBackend()
    await backend.start()
    (one,) = ranges(backend, 1)
    assert await one.take(3, dry_run=True)
    picked = await one.take_next(dry_run=True, exclude={9})
    assert picked != 9 and await backend.get("/registry/ranges/test") is None
    assert await one.take(3)


async def test_repair_restores_claims_and_frees_leaks_after_a_grace():
    backend = MemoryBackend()
    await backend.start()
    one, two = ranges(backend)
    await one.take(7)  # taken, but no service holds it (yet)
    await one.repair({3})
    assert not await two.take(3)  # restored from the services
    for _ in range(LEAK_REPAIRS - 2):
        await one.repair({3})
        assert not await two.take(7, dry_run=True)
    await one.repair({3})
    assert await two.take(7)
