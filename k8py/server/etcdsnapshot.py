"""Datastore snapshots as k3s names and keeps them: `k8py etcd-snapshot save|ls|delete|prune`,
the server's scheduled snapshots, and `k8py server --cluster-reset
--cluster-reset-restore-path` (k3s's commands and flags; the store does the copying, through
`store.snapshot.Snapshotter`, so another backend plugs in under the same names).

Files
    Snapshots live in one directory (`--dir`, default `<data-dir>/server/db/snapshots`, mode
    0700), one file each, mode 0600 (they hold Secrets, encrypted only if encryption at rest
    is on). A snapshot is named `<name>-<node>-<unix time>`: `on-demand` for `save`,
    `etcd-snapshot` for scheduled ones (k3s's defaults). Files whose names start with a dot
    are partial writes and are never listed.

Retention (k3s's `snapshotRetention`)
    Among the snapshots whose names start with the name prefix, the newest `retention` are
    kept: age is the unix time after the name's last `-`, else the file's modification time;
    the oldest beyond the count are deleted. Scheduled snapshots prune their own prefix after
    each save; `prune` prunes `--name`'s.

Schedule
    `keep_scheduled` sleeps until the cron schedule's next time on the system's wall clock
    (k3s: 00:00 and 12:00 system time by default), waking at least once a minute so a clock
    change is noticed; a failed snapshot is logged, never fatal to the server.

Restore
    The replaced database is moved aside (`store.snapshot`); the server then exits with k3s's
    message telling the operator to restart without `--cluster-reset`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import socket
import time
import zoneinfo
from collections.abc import Callable

from k8py.server.controllers import cron
from k8py.server.store.snapshot import Restored, Snapshotter

log = logging.getLogger(__name__)

ON_DEMAND_NAME = "on-demand"
SCHEDULED_NAME = "etcd-snapshot"
DEFAULT_SCHEDULE = "0 */12 * * *"
DEFAULT_RETENTION = 5
RESET_DONE = ("Managed etcd cluster membership has been reset, restart without --cluster-reset "
              "flag now. Backup and delete ${datadir}/server/db on each peer etcd server and "
              "rejoin the nodes")


def default_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "server", "db", "snapshots")


def node_name(given: str | None = None) -> str:
    """The node part of a snapshot's name: the server's node name (the agent's default)."""
    return (given or socket.gethostname()).lower()


def snapshot_name(base: str, node: str, now: float) -> str:
    return f"{base}-{node}-{int(now)}"


@dataclasses.dataclass(frozen=True)
class SnapshotFile:
    name: str
    path: str
    size: int
    created: float  # unix time

    @property
    def location(self) -> str:
        return "file://" + self.path


def created_at(name: str, mtime: float) -> float:
    """A snapshot's age as k3s reads it: the unix time after the name's last '-', else the
    file's modification time."""
    try:
        return float(int(name.rsplit("-", 1)[-1]))
    except ValueError:
        return mtime


def list_snapshots(directory: str) -> list[SnapshotFile]:
    """Every snapshot in the directory, oldest first (ties by name)."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        info = entry.stat(follow_symlinks=False)
        found.append(SnapshotFile(entry.name, os.path.abspath(entry.path), info.st_size,
                                  created_at(entry.name, info.st_mtime)))
    return sorted(found, key=lambda s: (s.created, s.name))


def to_prune(snapshots: list[SnapshotFile], prefix: str, retention: int) -> list[SnapshotFile]:
    """The snapshots retention removes: those with the prefix beyond the newest `retention`
    (none if retention < 1, as k3s)."""
    if retention < 1:
        return []
    matching = sorted((s for s in snapshots if s.name.startswith(prefix)),
                      key=lambda s: (s.created, s.name))
    return matching[:max(0, len(matching) - retention)]


def prune(directory: str, prefix: str, retention: int) -> list[str]:
    """Apply retention; the names deleted."""
    deleted = []
    for snapshot in to_prune(list_snapshots(directory), prefix, retention):
        try:
            os.unlink(snapshot.path)
        except FileNotFoundError:
            continue
        log.info("Removing local snapshot %s", snapshot.path)
        deleted.append(snapshot.name)
    return deleted


def delete(directory: str, names: list[str]) -> tuple[list[str], list[str]]:
    """(deleted, not found). Names are file names in the directory, nothing else."""
    deleted, missing = [], []
    for name in names:
        if os.sep in name or name in ("", ".", ".."):
            missing.append(name)
            continue
        try:
            os.unlink(os.path.join(directory, name))
            deleted.append(name)
        except FileNotFoundError:
            missing.append(name)
    return deleted, missing


async def save(snapshots: Snapshotter, directory: str, base: str, node: str,
               now: float | None = None) -> tuple[SnapshotFile, int]:
    """One snapshot into the directory; (its file, the revision it holds)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = snapshot_name(base, node, time.time() if now is None else now)
    path = os.path.abspath(os.path.join(directory, name))
    log.info("Saving etcd snapshot to %s", path)
    revision = await snapshots.save(path)
    info = os.stat(path)
    return SnapshotFile(name, path, info.st_size, created_at(name, info.st_mtime)), revision


def local_zone() -> datetime.tzinfo:
    """The system's time zone, which k3s's schedule runs on."""
    try:
        if os.environ.get("TZ"):
            return zoneinfo.ZoneInfo(os.environ["TZ"].lstrip(":"))
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f)
    except (OSError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return datetime.timezone.utc


def next_time(schedule: cron.Schedule, after: datetime.datetime,
              zone: datetime.tzinfo) -> datetime.datetime | None:
    return cron.next_after(schedule, after, zone)


async def keep_scheduled(snapshots: Snapshotter, directory: str, base: str, node: str,
                         schedule: cron.Schedule, retention: int, *,
                         zone: datetime.tzinfo | None = None,
                         now: Callable[[], datetime.datetime] | None = None) -> None:
    """Take a snapshot at every time the schedule names, then apply retention; forever."""
    zone = zone or local_zone()
    now = now or (lambda: datetime.datetime.now(datetime.timezone.utc))
    moment = now()
    while True:
        due = next_time(schedule, moment, zone)
        if due is None:
            log.warning("the etcd snapshot schedule names no time in the next years: "
                        "no scheduled snapshots")
            return
        while (left := (due - now()).total_seconds()) > 0:
            await asyncio.sleep(min(left, 60.0))
        moment = due
        try:
            taken, revision = await save(snapshots, directory, base, node,
                                         due.timestamp())
            log.info("Saved etcd snapshot %s at revision %d (%d bytes)", taken.name,
                     revision, taken.size)
            if retention > 0:
                log.info("Applying snapshot retention=%d to local snapshots with prefix %s "
                         "in %s", retention, base, directory)
                prune(directory, base, retention)
        except Exception as exc:  # a failed snapshot must not stop the server
            log.error("Failed to take scheduled snapshot: %s", exc)


async def restore(snapshots: Snapshotter, source: str) -> Restored:
    """`--cluster-reset --cluster-reset-restore-path`: the store replaced by the snapshot."""
    log.info("Restoring snapshot %s", source)
    restored = await snapshots.restore(source)
    if restored.replaced:
        log.info("The replaced database was moved to %s", restored.replaced)
    log.info("Restored %d keys from revision %d; the store continues at revision %d",
             restored.keys, restored.snapshot_revision, restored.revision)
    return restored


def restore_source(path: str, directory: str) -> str:
    """A restore path as given, or else the name of a snapshot in the snapshot directory."""
    if not os.path.exists(path) and os.sep not in path:
        candidate = os.path.join(directory, path)
        if os.path.exists(candidate):
            return candidate
    return path
