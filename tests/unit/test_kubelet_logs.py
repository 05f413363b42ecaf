"""The CRI log reader: record parsing, partial lines, tail, since, timestamps, limits, follow."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from k8py.agent.kubelet import logs

UTC = datetime.timezone.utc


def record(second: int, text: str, stream: str = "stdout", tag: str = "F") -> str:
    return f"2024-05-01T10:00:{second:02d}.12345Z {stream} {tag} {text}\n"


def write(path, *records: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(records))


async def read(path, **options) -> str:
    chunks = [c async for c in logs.read_log(str(path), logs.LogOptions(**options))]
    return b"".join(chunks).decode()


def test_parse_record():
    r = logs.parse_record(b"2016-10-06T00:17:09.669794202Z stdout F log content 1")
    assert (r.stream, r.partial, r.text) == ("stdout", False, b"log content 1")
    assert r.time == datetime.datetime(2016, 10, 6, 0, 17, 9, 669794, tzinfo=UTC)
    partial = logs.parse_record(b"2016-10-06T00:17:09.669794202+02:00 stderr P half")
    assert partial.partial and partial.stream == "stderr"
    assert partial.time == datetime.datetime(2016, 10, 5, 22, 17, 9, 669794, tzinfo=UTC)
    empty = logs.parse_record(b"2016-10-06T00:17:09Z stdout F")
    assert empty.text == b""
    assert logs.parse_record(b"garbage") is None
    assert logs.parse_record(b"2016-13-99 stdout F x") is None


def test_stamp_output_has_nine_digits_and_z():
    assert logs.format_stamp("2024-05-01T10:00:01.12345Z") == "2024-05-01T10:00:01.123450000Z"
    assert logs.format_stamp("2024-05-01T10:00:01Z") == "2024-05-01T10:00:01.000000000Z"
    assert logs.format_stamp("2024-05-01T10:00:01.5+00:00") == "2024-05-01T10:00:01.500000000Z"
    assert logs.format_stamp("2024-05-01T10:00:01.5+02:00") == \
        "2024-05-01T10:00:01.500000000+02:00"


async def test_partial_lines_join_per_stream(tmp_path):
    path = tmp_path / "0.log"
    write(path, record(1, "hel", tag="P"), record(1, "oops", "stderr"),
          record(2, "lo", tag="P"), record(2, " world"), record(3, "next"))
    assert await read(path) == "oops\nhello world\nnext\n"


async def test_file_ending_inside_a_line_gives_the_text_without_newline(tmp_path):
    path = tmp_path / "0.log"
    write(path, record(1, "done"), record(2, "prompt> ", tag="P"))
    assert await read(path) == "done\nprompt> "


async def test_tail_counts_whole_lines(tmp_path):
    path = tmp_path / "0.log"
    write(path, *(record(i, f"line {i}") for i in range(10)))
    write(path, record(11, "long ", tag="P"), record(11, "line"))
    assert await read(path, tail_lines=2) == "line 9\nlong line\n"
    assert await read(path, tail_lines=0) == ""
    assert await read(path, tail_lines=100) == "".join(f"line {i}\n" for i in range(10)) + \
        "long line\n"


def test_tail_offset_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "CHUNK", 7)  # records straddle every chunk boundary
    path = tmp_path / "0.log"
    write(path, *(record(i, f"line {i}") for i in range(5)))
    data = path.read_bytes()
    offset = logs.tail_offset(str(path), 2)
    assert data[offset:] == (record(3, "line 3") + record(4, "line 4")).encode()
    assert logs.tail_offset(str(path), 5) == 0
    assert logs.tail_offset(str(path), 0) == len(data)


async def test_since_timestamps_and_limit(tmp_path):
    path = tmp_path / "0.log"
    write(path, *(record(i, f"line {i}") for i in range(5)))
    since = datetime.datetime(2024, 5, 1, 10, 0, 3, tzinfo=UTC)
    assert await read(path, since=since) == "line 3\nline 4\n"
    assert await read(path, since=since, timestamps=True) == (
        "2024-05-01T10:00:03.123450000Z line 3\n2024-05-01T10:00:04.123450000Z line 4\n")
    assert await read(path, limit_bytes=10) == "line 0\nlin"
    # tail first, then since, as upstream
    assert await read(path, tail_lines=3, since=since) == "line 3\nline 4\n"


def test_options_from_query():
    now = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    options = logs.LogOptions.from_query(
        {"follow": "true", "tailLines": "5", "sinceSeconds": "60", "timestamps": "True",
         "limitBytes": "100"}, now)
    assert options == logs.LogOptions(True, 5, now - datetime.timedelta(seconds=60), True, 100)
    assert logs.LogOptions.from_query({"sinceTime": "2024-05-01T09:00:00Z"}).since == \
        datetime.datetime(2024, 5, 1, 9, tzinfo=UTC)
    assert logs.LogOptions.from_query({"tailLines": "-1"}).tail_lines is None
    for bad in ({"sinceSeconds": "0"}, {"limitBytes": "0"}, {"tailLines": "x"},
                {"sinceSeconds": "5", "sinceTime": "2024-05-01T09:00:00Z"}):
        with pytest.raises(ValueError):
            logs.LogOptions.from_query(bad)


async def test_follow_reads_new_lines_and_ends_when_the_container_stops(tmp_path):
    path = tmp_path / "0.log"
    write(path, record(1, "first"))
    running = True

    async def is_running() -> bool:
        return running

    stream = logs.read_log(str(path), logs.LogOptions(follow=True), running=is_running,
                           poll=0.01, check_every=0.01)
    assert await asyncio.wait_for(anext(stream), 5) == b"first\n"
    write(path, record(2, "second"))
    assert await asyncio.wait_for(anext(stream), 5) == b"second\n"
    write(path, record(3, "last words"))
    running = False
    rest = [c async for c in stream]
    assert b"".join(rest) == b"last words\n"


async def test_follow_reopens_a_rotated_file(tmp_path):
    path = tmp_path / "0.log"
    write(path, record(1, "before"))
    stream = logs.read_log(str(path), logs.LogOptions(follow=True), poll=0.01)
    assert await asyncio.wait_for(anext(stream), 5) == b"before\n"
    path.rename(tmp_path / "0.log.rotated")
    write(path, record(2, "after"))
    assert await asyncio.wait_for(anext(stream), 5) == b"after\n"
    await stream.aclose()
