"""Moving a single server's SQLite store into etcd, when it becomes the first member of an
embedded etcd cluster (`k8py server --cluster-init` on a data dir that held SQLite, as k3s
does on its first start with `--cluster-init`).

Every live key is copied with its value, in the order of its SQLite mod revision (the
object's resourceVersion). etcd assigns its own revisions, so resourceVersions change, but
their order is kept: one key per etcd transaction, in order, so the copies' mod revisions are
strictly increasing exactly as the originals were. Keys with a TTL get a lease for the time
they have left (already expired ones are skipped, as the store would delete them).

Restart safety: each transaction also writes the marker key `MARKER` holding the SQLite
revision copied so far, guarded on the marker's own mod revision. Killed at any point, a
migration resumes after the last key copied (never twice: the marker and the key commit
together), and two migrators cannot interleave (the guard fails the second). When all is
copied, the SQLite file is renamed `state.db.migrated` (k3s's name), which is what tells the
next start there is nothing to migrate; the marker is then removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time

from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.backend import Conflict
from k8py.server.store.etcd import EtcdBackend
from k8py.server.store.log import LogBackend
from k8py.server.store.sqlite import SQLiteBackend

log = logging.getLogger(__name__)

MARKER = b"/k8py/migration/sqlite"  # outside /registry: the API server never sees it
MIGRATED_SUFFIX = ".migrated"
PAGE = 1000


@dataclasses.dataclass(frozen=True)
class Migrated:
    copied: int  # keys written by this run
    skipped: int  # keys an earlier, interrupted run had copied
    expired: int  # TTL keys already past their expiry


async def migrate(sqlite_store: LogBackend, etcd_store: EtcdBackend, *,
                  stop_after: int | None = None) -> Migrated:
    """Copy every live key of the (started) SQLite store into the (started) etcd store, in
    revision order, resuming an interrupted run. `stop_after` copies at most that many keys
    (for tests of the resume)."""
    client = etcd_store.client
    live = []
    after = None
    revision = sqlite_store.revision
    while True:  # one consistent revision across the pages
        page = await sqlite_store.range("", after=after, limit=PAGE, revision=revision)
        live.extend(page.items)
        if not page.more or not page.items:
            break
        after = page.items[-1].key
    live.sort(key=lambda kv: kv.mod_revision)

    marker = await client.call("KV", "Range", pb.RangeRequest(key=MARKER), write=False)
    done = int(marker.kvs[0].value) if marker.kvs else 0
    marker_revision = marker.kvs[0].mod_revision if marker.kvs else 0
    if done:
        log.info("Resuming the migration from SQLite after revision %d", done)
    leases: dict[int, int] = {}  # seconds left -> lease id
    copied = skipped = expired = 0
    for kv in live:
        if kv.mod_revision <= done:
            skipped += 1
            continue
        if stop_after is not None and copied >= stop_after:
            break
        lease = 0
        if expires := sqlite_store.expires(kv.key):
            left = expires - time.time()
            if left <= 0:
                expired += 1
                continue
            seconds = math.ceil(left)
            if seconds not in leases:
                granted = await client.call("Lease", "LeaseGrant",
                                            pb.LeaseGrantRequest(TTL=seconds), write=True)
                leases[seconds] = granted.ID
            lease = leases[seconds]
        guard = pb.Compare(key=MARKER, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                           mod_revision=marker_revision)
        txn = pb.TxnRequest(compare=[guard], success=[
            pb.RequestOp(request_put=pb.PutRequest(key=kv.key.encode(), value=kv.value,
                                                   lease=lease)),
            pb.RequestOp(request_put=pb.PutRequest(key=MARKER,
                                                   value=str(kv.mod_revision).encode()))])
        # a lost answer is not retried here: the caller restarts, and the marker says
        # whether this key made it
        response = await client.call("KV", "Txn", txn, write=True)
        if not response.succeeded:
            raise Conflict(MARKER.decode(), marker_revision, 0)  # another migrator runs
        marker_revision = response.header.revision
        copied += 1
    return Migrated(copied, skipped, expired)


async def migrate_file(path: str, etcd_store: EtcdBackend) -> Migrated | None:
    """The `--cluster-init` hook: if the SQLite database `path` exists, copy it into the
    (started) etcd store and rename it `<path>.migrated`. None when there was nothing."""
    if not os.path.exists(path):
        return None
    log.info("Migrating the SQLite datastore %s to etcd", path)
    sqlite_store = SQLiteBackend(path)
    await sqlite_store.start()
    try:
        result = await migrate(sqlite_store, etcd_store)
    finally:
        await sqlite_store.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, path + MIGRATED_SUFFIX + suffix)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + ".lock")
    await etcd_store.client.call("KV", "DeleteRange", pb.DeleteRangeRequest(key=MARKER),
                                 write=True)
    log.info("Migrated %d keys from SQLite (%d copied earlier, %d expired); the database is "
             "now %s", result.copied, result.skipped, result.expired, path + MIGRATED_SUFFIX)
    return result
