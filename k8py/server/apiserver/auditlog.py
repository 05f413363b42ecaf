"""The audit log backend (`--audit-log-path`): JSON lines written by a thread of their own,
to a file rotated as upstream's (lumberjack's), or to standard output (`-`).

Writing never holds up the event loop: `AuditLog.write` appends an encoded line to a list
under a lock and returns; a writer thread takes everything pending at once, at most every
`BATCH_WINDOW`, and writes it with as few system calls as rotation allows. Pending lines are
capped (`MAX_PENDING_BYTES`): past it, events are dropped and counted rather than the server
growing without bound behind a stuck disk. A failed write (disk full, read-only file system)
drops that batch, cut back so no half line stays in the file, and logs one error; the next
error is logged only after a write has succeeded again, with how many events were lost. The
server goes on.

Rotation (`RotatingFile`, lumberjack's rules, what kube-apiserver uses):
- a write that would take the file past `--audit-log-maxsize` megabytes (0: 100 MB) first
  renames it to `<name>-<UTC time as 2006-01-02T15-04-05.000><ext>` beside it
  (`audit.log` → `audit-2025-01-02T03-04-05.678.log`) and starts a new file with the old
  one's mode; a line longer than the limit is dropped (lumberjack refuses it);
- after a rotation, backups beyond the `--audit-log-maxbackup` newest (0: all kept) and
  backups older than `--audit-log-maxage` days by the time in their name (0: any age) are
  deleted;
- the file is created with mode 0600 (its directory 0700 if missing), as upstream's
  ensureLogFile, and appended to across restarts.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
DEFAULT_MAX_SIZE_MB = 100  # lumberjack's, when --audit-log-maxsize is 0
BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"  # + ".mmm": Go's 2006-01-02T15-04-05.000
BATCH_WINDOW = 0.01  # seconds the writer lets lines gather before writing them
MAX_PENDING_BYTES = 64 * MEGABYTE


def ensure_file(path: str) -> None:
    """Create the log file (mode 0600) and its directory (0700), as upstream does at start;
    an existing file is kept. Raises OSError when it cannot be made."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_RDWR, 0o600))


class RotatingFile:
    """A file that rotates by size, as lumberjack.Logger. Called from one thread only."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_SIZE_MB * MEGABYTE,
                 max_backups: int = 0, max_age_days: int = 0,
                 clock: Callable[[], float] = time.time):
        self.path = path
        self.max_bytes = max_bytes or DEFAULT_MAX_SIZE_MB * MEGABYTE
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self.clock = clock
        self._fd: int | None = None
        self._size = 0
        directory, filename = os.path.split(path)
        self._dir = directory or "."
        stem, ext = os.path.splitext(filename)
        self._prefix, self._ext = stem + "-", ext

    def write_lines(self, lines: list[bytes]) -> int:
        """Write the lines in order, rotating between two when the next would not fit; the
        number of lines dropped for being longer than the limit. Raises OSError."""
        dropped = 0
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            if len(line) > self.max_bytes:
                dropped += 1
                continue
            if self._fd is None:
                self._open(len(line))
            if self._size + chunk_size + len(line) > self.max_bytes:
                self._write(b"".join(chunk))
                chunk, chunk_size = [], 0
                self._rotate()
            chunk.append(line)
            chunk_size += len(line)
        if chunk:
            self._write(b"".join(chunk))
        return dropped

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes) -> None:
        """All of data, or none of it: a write that fails part way (a full disk) is cut
        back, so the file never holds half an event."""
        start = self._size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError:
            if self._size != start:
                try:
                    os.ftruncate(self._fd, start)
                    self._size = start
                except OSError:
                    pass
            raise

    def _open(self, first_write: int) -> None:
        """The existing file, appended to, unless the first write would fill it."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            self._open_new()
            return
        if size + first_write >= self.max_bytes:
            self._rotate()
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = size

    def _rotate(self) -> None:
        self.close()
        self._open_new()
        self._remove_old()

    def _open_new(self) -> None:
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        mode = 0o600
        try:
            mode = os.stat(self.path).st_mode & 0o777
        except FileNotFoundError:
            pass
        else:
            os.rename(self.path, self._backup_name())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                           mode)
        os.fchmod(self._fd, mode)  # whatever the umask
        self._size = 0

    def _backup_name(self) -> str:
        moment = self.clock()
        while True:  # a second rotation in the same millisecond must not overwrite the first
            name = os.path.join(self._dir, self._prefix + _stamp(moment) + self._ext)
            if not os.path.exists(name):
                return name
            moment += 0.001

    def backups(self) -> list[tuple[float, str]]:
        """The backups beside the file, newest first, with the time in their names."""
        found = []
        for name in os.listdir(self._dir):
            if not (name.startswith(self._prefix) and name.endswith(self._ext)):
                continue
            stamp = name[len(self._prefix):len(name) - len(self._ext)]
            moment = _parse_stamp(stamp)
            if moment is not None:
                found.append((moment, os.path.join(self._dir, name)))
        return sorted(found, reverse=True)

    def _remove_old(self) -> None:
        backups = self.backups()
        remove = []
        if self.max_backups and len(backups) > self.max_backups:
            remove, backups = backups[self.max_backups:], backups[:self.max_backups]
        if self.max_age_days:
            cutoff = self.clock() - self.max_age_days * 86400
            remove += [b for b in backups if b[0] < cutoff]
        for _, path in remove:
            try:
                os.remove(path)
            except OSError as exc:
                log.error("audit log: could not remove old backup %s: %s", path, exc.strerror)


def _stamp(moment: float) -> str:
    when = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return when.strftime(BACKUP_TIME_FORMAT) + f".{when.microsecond // 1000:03d}"


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}")


def _parse_stamp(text: str) -> float | None:
    if not _STAMP.fullmatch(text):
        return None
    try:
        when = datetime.datetime.strptime(text[:-4], BACKUP_TIME_FORMAT)
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.timezone.utc).timestamp() + int(text[-3:]) / 1000


class _Stdout:
    """`--audit-log-path -`: standard output, never rotated."""

    def write_lines(self, lines: list[bytes]) -> int:
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(sys.stdout.fileno(), data):]
        return 0

    def close(self) -> None:
        pass


class AuditLog:
    """The sink: `write` from the event loop, a thread writes (see the module docstring)."""

    def __init__(self, path: str, *, max_size_mb: int = 0, max_backups: int = 0,
                 max_age_days: int = 0):
        self.path = path
        if path == "-":
            self._out: RotatingFile | _Stdout = _Stdout()
        else:
            ensure_file(path)
            self._out = RotatingFile(path, max_size_mb * MEGABYTE, max_backups, max_age_days)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing = False
        self._stopping = False
        self.dropped = 0  # events lost since the last report (full buffer, failed writes)
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        with self._lock:
            if self._pending_bytes + len(line) > MAX_PENDING_BYTES:
                self.dropped += 1
                if not self._failing:
                    self._failing = True
                    log.error("audit log %s: %d MB of events wait to be written; dropping "
                              "events until the writer catches up", self.path,
                              MAX_PENDING_BYTES // MEGABYTE)
                return
            self._pending.append(line)
            self._pending_bytes += len(line)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every line written so far is on its way to the file (tests, stop)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending or self._writing:
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0 or not self._idle.wait(left):
                    return False
        return True

    def close(self) -> None:
        """Write what is pending, stop the thread, close the file."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopping:
                time.sleep(BATCH_WINDOW)
            with self._lock:
                self._wake.clear()
                lines, self._pending, self._pending_bytes = self._pending, [], 0
                self._writing = bool(lines)
            if lines:
                self._write(lines)
            with self._idle:
                self._writing = False
                self._idle.notify_all()
                if self._stopping and not self._pending:
                    break
        self._out.close()

    def _write(self, lines: list[bytes]) -> None:
        try:
            too_long = self._out.write_lines(lines)
        except OSError as exc:
            with self._lock:
                self.dropped += len(lines)
                if self._failing:
                    return
                self._failing = True
            log.error("audit log %s: write failed, %d event(s) lost: %s; events are dropped "
                      "until a write succeeds", self.path, len(lines),
                      exc.strerror or exc)
            return
        if too_long:
            log.error("audit log %s: %d event(s) longer than --audit-log-maxsize dropped",
                      self.path, too_long)
        with self._lock:
            if not self._failing:
                return
            self._failing, lost, self.dropped = False, self.dropped, 0
        log.error("audit log %s: writing again after %d event(s) were lost", self.path, lost)
