"""The store contract (k8py.server.store.backend), against every backend."""

from __future__ import annotations

import asyncio

import pytest

from k8py.server.store.backend import (
    Compacted,
    Conflict,
    EventType,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    Unavailable,
)


async def test_create_get_and_key_exists(store):
    base = store.revision  # 0 for a new file; etcd's revisions go on across the tests
    kv = await store.create("/registry/pods/default/a", b"one")
    assert kv.create_revision == kv.mod_revision == store.revision == base + 1
    got = await store.get("/registry/pods/default/a")
    assert got == kv and got.value == b"one"
    with pytest.raises(KeyExists):
        await store.create("/registry/pods/default/a", b"two")
    assert store.revision == base + 1, "a failed write must not use a revision"
    assert await store.get("/registry/pods/default/missing") is None


async def test_update_is_compare_and_swap(store):
    kv = await store.create("/k", b"v1")
    kv2 = await store.update("/k", b"v2", mod_revision=kv.mod_revision)
    assert kv2.mod_revision == kv.mod_revision + 1
    assert kv2.create_revision == kv.create_revision
    with pytest.raises(Conflict) as info:
        await store.update("/k", b"v3", mod_revision=kv.mod_revision)
    assert info.value.actual == kv2.mod_revision
    with pytest.raises(KeyNotFound):
        await store.update("/nope", b"x", mod_revision=1)
    assert (await store.get("/k")).value == b"v2"


async def test_delete_guarded_and_unconditional(store):
    a = await store.create("/a", b"A")
    b = await store.create("/b", b"B")
    with pytest.raises(Conflict):
        await store.delete("/a", mod_revision=a.mod_revision + 100)
    prev = await store.delete("/a", mod_revision=a.mod_revision)
    assert prev == a
    assert await store.get("/a") is None
    assert (await store.delete("/b")).value == b"B"
    with pytest.raises(KeyNotFound):
        await store.delete("/b")
    # A deleted key can be created again, as a new incarnation.
    again = await store.create("/a", b"A2")
    assert again.create_revision == again.mod_revision > prev.mod_revision
    assert b.mod_revision < again.mod_revision


async def test_concurrent_creates_of_one_key_have_one_winner(store):
    results = await asyncio.gather(
        *(store.create("/race", str(i).encode()) for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExists) for r in results if isinstance(r, Exception))


async def test_concurrent_writes_get_distinct_growing_revisions(store):
    base = store.revision
    kvs = await asyncio.gather(*(store.create(f"/k/{i:03}", b"x") for i in range(200)))
    revisions = sorted(kv.mod_revision for kv in kvs)
    assert revisions == list(range(base + 1, base + 201))
    assert store.revision == base + 200


async def test_get_at_past_and_future_revisions(store):
    kv1 = await store.create("/k", b"1")
    kv2 = await store.update("/k", b"2", mod_revision=kv1.mod_revision)
    await store.delete("/k", mod_revision=kv2.mod_revision)
    assert (await store.get("/k", revision=kv1.mod_revision)).value == b"1"
    assert (await store.get("/k", revision=kv2.mod_revision)).value == b"2"
    assert await store.get("/k", revision=store.revision) is None
    with pytest.raises(FutureRevision):
        await store.get("/k", revision=store.revision + 1)


async def test_range_prefix_limit_continue_and_count(store):
    for i in range(10):
        await store.create(f"/registry/pods/ns/p{i}", str(i).encode())
    await store.create("/registry/podsx/ns/other", b"not a pod")
    await store.create("/registry/pod", b"not under the prefix either")

    page = await store.range("/registry/pods/", limit=4)
    assert [kv.key[-2:] for kv in page.items] == ["p0", "p1", "p2", "p3"]
    assert page.more and page.revision == store.revision
    keys = [kv.key for kv in page.items]
    while page.more:
        page = await store.range(
            "/registry/pods/", after=page.items[-1].key, limit=4, revision=page.revision
        )
        keys += [kv.key for kv in page.items]
    assert keys == [f"/registry/pods/ns/p{i}" for i in range(10)]
    assert not page.more
    assert (await store.range("/registry/pods/", limit=10)).more is False
    assert await store.count("/registry/pods/") == (store.revision, 10)
    assert len((await store.range("/registry/pods/")).items) == 10


async def test_range_pages_read_one_snapshot(store):
    for i in range(6):
        await store.create(f"/s/{i}", b"old")
    first = await store.range("/s/", limit=3)
    # Writes between pages: the next page still shows the first page's revision.
    for i in range(6):
        kv = await store.get(f"/s/{i}")
        await store.update(f"/s/{i}", b"new", mod_revision=kv.mod_revision)
    await store.delete("/s/5")
    await store.create("/s/9", b"new key")
    second = await store.range("/s/", after=first.items[-1].key, limit=10, revision=first.revision)
    assert [kv.key for kv in second.items] == ["/s/3", "/s/4", "/s/5"]
    assert all(kv.value == b"old" for kv in second.items)
    assert await store.count("/s/", revision=first.revision) == (first.revision, 6)
    assert (await store.count("/s/"))[1] == 6  # 5 deleted, 9 added


async def test_watch_delivers_events_with_previous_values(store):
    watch = store.watch("/w/")
    kv = await store.create("/w/a", b"1")
    kv2 = await store.update("/w/a", b"2", mod_revision=kv.mod_revision)
    await store.create("/other", b"ignored")
    await store.delete("/w/a")
    events = []
    while len(events) < 3:
        events += await asyncio.wait_for(anext(watch), 5)
    watch.close()
    assert [e.type for e in events] == [EventType.CREATE, EventType.UPDATE, EventType.DELETE]
    assert events[0].prev is None and events[0].kv == kv
    assert events[1].kv == kv2 and events[1].prev == kv
    assert events[2].prev == kv2 and events[2].kv.value == b""
    assert events[2].revision == kv2.mod_revision + 2


async def test_watch_from_past_revision_replays_history_then_live_with_no_gap(store):
    """Writers run while a watch starts from a past revision: every event under the prefix
    arrives once, in order."""
    written = [(await store.create(f"/h/{i}", b"x")).mod_revision for i in range(50)]
    start = written[19]
    stop = asyncio.Event()

    async def writer(n):
        i = 0
        while not stop.is_set():
            key = f"/h/w{n}-{i}"
            kv = await store.create(key, b"y")
            written.append(kv.mod_revision)
            kv = await store.update(key, b"z", mod_revision=kv.mod_revision)
            written.append(kv.mod_revision)
            await store.create(f"/elsewhere/{n}-{i}", b"noise")
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(8)]
    await asyncio.sleep(0)
    watch = store.watch("/h/", start_revision=start)
    seen = []
    try:
        while len(seen) < 400:
            seen += [e.revision for e in await asyncio.wait_for(anext(watch), 5)]
    finally:
        stop.set()
        await asyncio.gather(*writers)
        watch.close()
    assert seen == sorted(set(seen)), "events out of order or duplicated"
    assert seen[0] == start
    expected = sorted(r for r in written if start <= r <= seen[-1])
    assert seen == expected, "an event went missing"


async def test_watch_future_revision_waits_for_it(store):
    base = (await store.create("/f/0", b"")).mod_revision
    watch = store.watch("/f/", start_revision=base + 2)
    await store.create("/f/1", b"")
    await store.create("/f/2", b"")
    events = await asyncio.wait_for(anext(watch), 5)
    assert [e.revision for e in events] == [base + 2]
    watch.close()


async def test_compaction_keeps_latest_versions_and_fails_older_reads(store):
    kv = await store.create("/c/a", b"1")
    first = kv.mod_revision
    for i in range(2, 6):
        kv = await store.update("/c/a", str(i).encode(), mod_revision=kv.mod_revision)
    gone = await store.create("/c/gone", b"bye")
    await store.delete("/c/gone", mod_revision=gone.mod_revision)
    await store.create("/c/b", b"b")
    at = store.revision - 1
    await store.compact(at)
    assert store.compact_revision == at
    assert (await store.get("/c/a")).value == b"5"
    assert (await store.get("/c/a", revision=at)).value == b"5"
    assert await store.get("/c/gone") is None
    assert [kv.key for kv in (await store.range("/c/", revision=at)).items] == ["/c/a"]
    with pytest.raises(Compacted):
        await store.get("/c/a", revision=first + 1)
    with pytest.raises(Compacted):
        await store.range("/c/", revision=at - 1)
    with pytest.raises(Compacted):
        store.watch("/c/", start_revision=at)
    # Resuming right after the compaction point works, with previous values.
    watch = store.watch("/c/", start_revision=at + 1)
    events = await asyncio.wait_for(anext(watch), 5)
    assert [e.kv.key for e in events] == ["/c/b"]
    kv = await store.update("/c/a", b"6", mod_revision=kv.mod_revision)
    events = await asyncio.wait_for(anext(watch), 5)
    assert events[0].prev.value == b"5"
    watch.close()


async def test_automatic_compaction_bounds_history(make_store):
    store = await make_store(retain=10, compact_interval=0.02)
    kv = await store.create("/auto", b"0")
    base = kv.mod_revision
    for i in range(100):
        kv = await store.update("/auto", str(i).encode(), mod_revision=kv.mod_revision)
    from tests.conftest import eventually

    await eventually(lambda: store.compact_revision >= store.revision - 10, what="compaction")
    assert (await store.get("/auto")).value == b"99"
    with pytest.raises(Compacted):
        await store.get("/auto", revision=base + 50)


async def test_keys_with_ttl_expire_and_watchers_see_it(store):
    watch = store.watch("/events/")
    await store.create("/events/e1", b"short", ttl=0.2)
    await store.create("/events/e2", b"long", ttl=3600)
    kv3 = await store.create("/events/e3", b"renewed", ttl=0.2)
    await store.update("/events/e3", b"kept", mod_revision=kv3.mod_revision)  # no ttl now
    deletes = []
    while not deletes:
        deletes = [
            e for e in await asyncio.wait_for(anext(watch), 5) if e.type is EventType.DELETE
        ]
    assert [e.kv.key for e in deletes] == ["/events/e1"]
    assert deletes[0].prev.value == b"short"
    assert await store.get("/events/e1") is None
    assert (await store.get("/events/e2")).value == b"long"
    assert (await store.get("/events/e3")).value == b"kept"
    watch.close()


async def test_slow_watcher_is_dropped_not_buffered_forever(make_store):
    store = await make_store()
    store._max_watch_buffer = 5  # a test knob: the default is 100,000 events
    watch = store.watch("/slow/")
    for i in range(10):
        await store.create(f"/slow/{i}", b"")
    from k8py.server.store.backend import WatchExpired

    with pytest.raises(WatchExpired):
        for _ in range(20):
            await asyncio.wait_for(anext(watch), 5)


async def test_close_finishes_queued_writes_then_refuses(make_store):
    store = await make_store()
    pending = [asyncio.ensure_future(store.create(f"/q/{i}", b"")) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(Unavailable):
        await store.create("/q/late", b"")
