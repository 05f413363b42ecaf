"""Container logs as the kubelet serves them: reading the runtime's CRI log files.

The runtime writes a container's stdout and stderr to one file (`ContainerConfig.log_path`
under the sandbox's log directory: `<logs>/<ns>_<pod>_<uid>/<container>/<restart>.log`), one
record per line: `<RFC3339Nano time> <stream> <tag> <text>`. The tag is `F` when the text ends
a line and `P` when the runtime split a long line: the text goes on in the stream's next
record. Readers join partial records into whole lines, per stream.

Options are upstream's `PodLogOptions` as the kubelet takes them from the query:
- `tailLines`: start that many whole lines before the end (found by reading the file
  backwards, so a long log is not read from the start);
- `sinceSeconds`/`sinceTime`: skip lines written before that instant (after tailing, as
  upstream);
- `timestamps`: prefix each line with its time as RFC3339 with nine fraction digits;
- `limitBytes`: stop after that many bytes of output (the last line may be cut);
- `follow`: at the end of the file, wait for more. A follower polls the file (cheap: one stat
  every `poll` seconds) and asks `running()` about once a second; when the container is no
  longer running it drains what is left and ends, as upstream's `kubectl logs -f` ends when
  its container exits. A file the runtime reopened (`ReopenContainerLog` after a rotation) is
  followed by path: a new inode or a shrunken file is read again from its start.

Everything here reads local files in small chunks; chunks and backwards scans run in the
default executor so that a slow disk never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

CHUNK = 64 * 1024
_RECORD = re.compile(rb"^(\S+) (stdout|stderr) ([PF])(?: (.*))?$", re.DOTALL)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


@dataclasses.dataclass(frozen=True)
class Record:
    """One line of a CRI log file."""
    stamp: str  # as written
    time: datetime.datetime  # aware, microsecond precision
    stream: str  # stdout or stderr
    partial: bool
    text: bytes


@dataclasses.dataclass(frozen=True)
class Line:
    """A whole line of a stream: the first record's time, the joined text."""
    stamp: str
    time: datetime.datetime
    stream: str
    text: bytes
    complete: bool = True  # False: the file ended inside a line


def parse_time(stamp: str) -> datetime.datetime:
    """An RFC3339 time with up to nine fraction digits (Python keeps six)."""
    match = _STAMP.match(stamp)
    if match is None:
        raise ValueError(f"not an RFC3339 time: {stamp!r}")
    base, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    parsed = datetime.datetime.fromisoformat(base).replace(microsecond=micros)
    offset = datetime.timedelta(0) if zone == "Z" else datetime.timedelta(
        hours=int(zone[1:3]), minutes=int(zone[4:6])) * (-1 if zone[0] == "-" else 1)
    return parsed.replace(tzinfo=datetime.timezone(offset))


def format_stamp(stamp: str) -> str:
    """Upstream's output format: nine fraction digits, `Z` for UTC."""
    match = _STAMP.match(stamp)
    if match is None:
        return stamp
    base, fraction, zone = match.groups()
    if zone in ("+00:00", "-00:00"):
        zone = "Z"
    return f"{base}.{(fraction or '').ljust(9, '0')}{zone}"


def parse_record(raw: bytes) -> Record | None:
    """One record (without its newline); None for a line that is not CRI format."""
    match = _RECORD.match(raw)
    if match is None:
        return None
    stamp = match.group(1).decode("ascii", "replace")
    try:
        when = parse_time(stamp)
    except ValueError:
        return None
    return Record(stamp, when, match.group(2).decode(), match.group(3) == b"P",
                  match.group(4) or b"")


class Joiner:
    """Joins partial records into lines, one pending line per stream."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[Record, list[bytes]]] = {}

    def feed(self, record: Record) -> Line | None:
        first, parts = self._pending.pop(record.stream, (record, []))
        parts.append(record.text)
        if record.partial:
            self._pending[record.stream] = (first, parts)
            return None
        return Line(first.stamp, first.time, first.stream, b"".join(parts))

    def flush(self) -> list[Line]:
        """Lines the file ended inside of."""
        lines = [Line(first.stamp, first.time, first.stream, b"".join(parts), complete=False)
                 for first, parts in self._pending.values()]
        self._pending.clear()
        return sorted(lines, key=lambda line: line.time)


@dataclasses.dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since: datetime.datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str],
                   now: datetime.datetime | None = None) -> LogOptions:
        """Upstream's query parameters; ValueError with upstream's message when invalid."""
        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("true", "1")

        def number(name: str) -> int | None:
            value = query.get(name)
            if value in (None, ""):
                return None
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}: invalid value {value!r}") from None

        tail, seconds, limit = number("tailLines"), number("sinceSeconds"), number("limitBytes")
        since_time = query.get("sinceTime") or None
        if tail is not None and tail < 0:
            tail = None  # upstream: a negative tailLines means "all"
        if seconds is not None and since_time is not None:
            raise ValueError("at most one of sinceTime or sinceSeconds may be specified")
        if seconds is not None and seconds < 1:
            raise ValueError("sinceSeconds: must be greater than 0")
        if limit is not None and limit < 1:
            raise ValueError("limitBytes: must be greater than 0")
        since = None
        if seconds is not None:
            now = now or datetime.datetime.now(datetime.timezone.utc)
            since = now - datetime.timedelta(seconds=seconds)
        elif since_time is not None:
            since = parse_time(since_time)
        return cls(follow=flag("follow"), tail_lines=tail, since=since,
                   timestamps=flag("timestamps"), limit_bytes=limit)


def render(line: Line, timestamps: bool) -> bytes:
    text = line.text + b"\n" if line.complete else line.text
    if timestamps:
        return format_stamp(line.stamp).encode() + b" " + text
    return text


def tail_offset(path: str, lines: int) -> int:
    """The offset where the last `lines` whole lines of the file begin (partial records
    belong to the line their final `F` record ends). Reads backwards in chunks."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        position, carry, finals = end, b"", 0
        while position > 0:
            step = min(CHUNK, position)
            position -= step
            f.seek(position)
            block = f.read(step) + carry
            raw_lines = block.split(b"\n")
            carry = raw_lines[0]  # may continue further back
            cursor = position + len(block)
            for raw in reversed(raw_lines[1:]):
                cursor -= len(raw)  # where this record starts
                if raw and _is_final(raw):
                    finals += 1
                    if finals > lines:
                        return cursor + len(raw) + 1
                cursor -= 1  # its newline
        if carry and _is_final(carry):
            finals += 1
            if finals > lines:
                return len(carry) + 1
        return 0


def _is_final(raw: bytes) -> bool:
    """Whether a raw record ends a line (its tag is F), without a full parse."""
    parts = raw.split(b" ", 3)
    return len(parts) >= 3 and parts[2] == b"F"


def _read_chunk(path_fd, size: int) -> bytes:
    return path_fd.read(size)


async def read_log(path: str, options: LogOptions, *,
                   running: Callable[[], Awaitable[bool]] | None = None,
                   poll: float = 0.2, check_every: float = 1.0) -> AsyncIterator[bytes]:
    """The log at `path` as the client sees it, in chunks. With `options.follow`, waits for
    more until `running()` says the container stopped (never, without `running`)."""
    loop = asyncio.get_running_loop()
    start = 0
    if options.tail_lines is not None:
        start = await loop.run_in_executor(None, tail_offset, path, options.tail_lines)
    budget = options.limit_bytes
    f = open(path, "rb")
    try:
        f.seek(start)
        joiner, rest = Joiner(), b""
        last_check, stopping = time.monotonic(), False
        while True:
            data = await loop.run_in_executor(None, _read_chunk, f, CHUNK)
            if data:
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                out = []
                for raw in lines:
                    record = parse_record(raw)
                    if record is None:
                        continue
                    line = joiner.feed(record)
                    if line is not None and (options.since is None or line.time >= options.since):
                        out.append(render(line, options.timestamps))
                chunk = b"".join(out)
                if chunk:
                    if budget is not None:
                        chunk = chunk[:budget]
                        budget -= len(chunk)
                    yield chunk
                    if budget == 0:
                        return
                continue
            # at the end of the file
            if not options.follow or stopping:
                break
            if _replaced(path, f):
                f.close()
                f = open(path, "rb")
                rest = b""
                continue
            if running is not None and time.monotonic() - last_check >= check_every:
                last_check = time.monotonic()
                if not await running():
                    stopping = True  # read once more: what it wrote before it stopped
                    continue
            await asyncio.sleep(poll)
        tail = [render(line, options.timestamps) for line in joiner.flush()
                if options.since is None or line.time >= options.since]
        chunk = b"".join(tail)
        if chunk:
            yield chunk[:budget] if budget is not None else chunk
    finally:
        f.close()


def _replaced(path: str, f) -> bool:
    """Whether the runtime reopened the log at `path`: another file, or this one shrank."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or now.st_size < f.tell()
