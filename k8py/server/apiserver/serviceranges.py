"""The ClusterIP and NodePort ranges' allocation state, in the store (upstream's legacy
allocators: a RangeAllocation bitmap per range, `/registry/ranges/serviceips` and
`/registry/ranges/servicenodeports`).

Why the bitmap and not 1.33's IPAddress objects: NodePorts have no per-port objects upstream,
so the bitmap serves both ranges with one mechanism, and it is invisible to the API (no new
resources to serve). Several API servers sharing one store stay correct because every change
is a compare-and-swap on the range's key: read the bitmap with its revision, set or clear
bits, write back at that revision; a lost race (`Conflict`, or `KeyExists` for the first
write) reads again and retries, so two servers can never both take the same value. In one
process a lock serializes the writers of a range (fewer lost races, same result).

The stored value is a RangeAllocation: `{"kind": "RangeAllocation", "apiVersion": "v1",
"range": "<cidr or low-high>", "data": "<base64 of the bitmap as a big-endian integer>"}`,
bit i standing for the range's first value + i.

Repair (upstream's repair controllers): `repair(claims)` rebuilds the bitmap from the values
the stored Services hold. A value a Service holds but the bitmap lacks is set again. A value
set without a Service may be an allocation another API server made and has not written yet,
so it is kept for `LEAK_REPAIRS` repairs in a row before it is freed. A bitmap stored for a
different range (the flag changed) is rebuilt from the Services alone.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import Callable

from k8py.server.store.backend import Backend, Conflict, KeyExists

SERVICE_IPS_KEY = "/registry/ranges/serviceips"
NODE_PORTS_KEY = "/registry/ranges/servicenodeports"
LEAK_REPAIRS = 3  # upstream's numRepairsBeforeLeakCleanup


def _encode(range_text: str, bits: int) -> bytes:
    data = bits.to_bytes((bits.bit_length() + 7) // 8, "big")
    return json.dumps({"kind": "RangeAllocation", "apiVersion": "v1",
                       "metadata": {"creationTimestamp": None}, "range": range_text,
                       "data": base64.b64encode(data).decode()},
                      separators=(",", ":")).encode()


class StoredRange:
    """Integers first..last, taken and freed by compare-and-swap on one store key, with
    upstream's static/dynamic split: dynamic allocation prefers [static_end, last]."""

    def __init__(self, backend: Backend, key: str, range_text: str, first: int, last: int,
                 static: int):
        self.backend, self.key, self.range_text = backend, key, range_text
        self.first, self.last = first, last
        self.static_end = min(first + static, last)
        self._lock = asyncio.Lock()
        self._leaks: dict[int, int] = {}  # value -> repairs left before it is freed

    def __contains__(self, value: int) -> bool:
        return self.first <= value <= self.last

    def _bit(self, value: int) -> int:
        return 1 << (value - self.first)

    async def read(self) -> tuple[int, int]:
        """(bitmap, revision); (0, 0) when nothing is stored yet, and 0 for a bitmap of
        another range."""
        kv = await self.backend.get(self.key)
        if kv is None:
            return 0, 0
        doc = json.loads(kv.value)
        if doc.get("range") != self.range_text:
            return 0, kv.mod_revision
        return int.from_bytes(base64.b64decode(doc.get("data") or ""), "big"), kv.mod_revision

    async def _swap(self, change: Callable[[int], int]) -> None:
        """Apply `change` (bitmap -> bitmap) to the stored bitmap, retrying lost races; a
        change that raises leaves the store as it was."""
        async with self._lock:
            while True:
                bits, revision = await self.read()
                new = change(bits)
                if new == bits and revision:
                    return
                value = _encode(self.range_text, new)
                try:
                    if revision:
                        await self.backend.update(self.key, value, mod_revision=revision)
                    else:
                        await self.backend.create(self.key, value)
                    return
                except (Conflict, KeyExists):
                    continue

    async def take(self, value: int, dry_run: bool = False) -> bool:
        """Reserve `value`; False if it is taken. A dry run only looks."""
        if dry_run:
            return not (await self.read())[0] & self._bit(value)
        won = False

        def change(bits: int) -> int:
            nonlocal won
            won = not bits & self._bit(value)
            return bits | self._bit(value)
        await self._swap(change)
        return won

    def _free(self, bits: int, exclude: set[int]) -> int | None:
        for low, high in ((self.static_end, self.last), (self.first, self.static_end - 1)):
            if low > high:
                continue
            start = random.randint(low, high)
            for value in itertools.chain(range(start, high + 1), range(low, start)):
                if not bits & self._bit(value) and value not in exclude:
                    return value
        return None

    async def take_next(self, dry_run: bool = False,
                        exclude: set[int] = frozenset()) -> int | None:  # type: ignore
        """Reserve a free value (None when the range is full). A dry run only picks one,
        avoiding `exclude` (what the same dry run picked already)."""
        if dry_run:
            return self._free((await self.read())[0], exclude)
        taken: int | None = None

        def change(bits: int) -> int:
            nonlocal taken
            taken = self._free(bits, set())
            return bits if taken is None else bits | self._bit(taken)
        await self._swap(change)
        return taken

    async def release(self, values: set[int]) -> None:
        mask = sum(self._bit(v) for v in values if v in self)
        if mask:
            await self._swap(lambda bits: bits & ~mask)

    async def repair(self, claims: set[int]) -> None:
        """Rebuild from `claims` (what the stored Services hold), keeping values set without
        a Service for `LEAK_REPAIRS` repairs (they may be in flight on another server)."""
        wanted = 0
        for value in claims:
            if value in self:
                wanted |= self._bit(value)

        def change(bits: int) -> int:
            rebuilt = wanted
            leaks: dict[int, int] = {}
            stray = bits & ~wanted
            while stray:
                low = stray & -stray
                value = self.first + low.bit_length() - 1
                left = self._leaks.get(value, LEAK_REPAIRS) - 1
                if left > 0:
                    leaks[value] = left
                    rebuilt |= low
                stray ^= low
            self._leaks = leaks
            return rebuilt
        await self._swap(change)
