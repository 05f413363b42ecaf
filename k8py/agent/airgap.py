"""Airgap images: every image archive in `<data-dir>/agent/images/` is imported into
containerd at start, and new or changed ones when they appear.

`run_airgap(data_dir, socket_path, ready)` is a Supervisor daemon. It waits for containerd
(`ready`), then scans the directory every `interval` seconds (a `stat` per file: cheap
enough for the handful of files such a directory holds, and it works on every file system,
unlike inotify). A file is (re)imported when its (mtime, size) differs from the last import
attempt, once it has not been modified for `settle` seconds (a file still being copied is
left for the next scan). Archives are what `k8py.runtime.images` reads: OCI layout or docker
archive tars, plain, gzip or zstd (`*.tar`, `*.tar.gz`, `*.tgz`, `*.tar.zst`, `*.tzst`).

One log line per import naming the images; one clear line for a file that cannot be imported
(it is retried only when it changes). A bad file never stops the agent. When containerd
restarts (`ready` cleared and set again), everything is imported again: a containerd whose
state was lost gets its images back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from k8py.runtime.images import ImageError, import_archive

log = logging.getLogger(__name__)

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")


def images_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "agent", "images")


def _settling(directory: str, now: float, settle: float) -> bool:
    """Whether an archive in directory is too fresh to import yet."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return False
    for entry in entries:
        if entry.name.endswith(SUFFIXES) and not entry.name.startswith("."):
            try:
                if now - entry.stat().st_mtime < settle:
                    return True
            except OSError:
                continue
    return False


def scan(directory: str, now: float, settle: float) -> dict[str, tuple[int, int]]:
    """The archives in directory that have settled: path -> (mtime_ns, size)."""
    found = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.endswith(SUFFIXES) or entry.name.startswith("."):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if entry.is_file() and now - st.st_mtime >= settle:
            found[entry.path] = (st.st_mtime_ns, st.st_size)
    return found


async def run_airgap(data_dir: str, socket_path: str, ready: asyncio.Event, *,
                     interval: float = 5.0, settle: float = 1.0) -> None:
    directory = images_dir(data_dir)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    attempted: dict[str, tuple[int, int]] = {}
    while True:
        if not ready.is_set():
            attempted.clear()  # a (re)started containerd gets everything again
            await ready.wait()
        files = await asyncio.to_thread(scan, directory, time.time(), settle)
        for path, stamp in sorted(files.items()):
            if attempted.get(path) == stamp:
                continue
            attempted[path] = stamp
            started = time.monotonic()
            try:
                refs = await import_archive(path, socket_path)
            except ImageError as exc:
                log.error("airgap: cannot import %s: %s", path, exc)
                continue
            except Exception:  # never let one file stop the agent
                log.exception("airgap: cannot import %s", path)
                continue
            log.info("airgap: imported %s from %s in %.1fs",
                     ", ".join(refs) or "an unnamed image", os.path.basename(path),
                     time.monotonic() - started)
        # a file still settling is looked at again as soon as it may have settled, not a
        # whole interval later (the first pods of a new node wait for their images)
        waiting = await asyncio.to_thread(_settling, directory, time.time(), settle)
        await asyncio.sleep(min(interval, settle) if waiting else interval)
