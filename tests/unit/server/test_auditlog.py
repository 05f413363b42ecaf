"""The audit log backend: lumberjack's rotation (size, backup names, maxbackup, maxage,
modes) and the writer thread (order, flush, a full disk logged once, never raised)."""

from __future__ import annotations

import logging
import os
import re
import stat

from k8py.server.apiserver import auditlog
from k8py.server.apiserver.auditlog import AuditLog, RotatingFile

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def lines(count: int, size: int = 100, tag: str = "e") -> list[bytes]:
    return [(f"{tag}{i:05}".ljust(size - 1, ".") + "\n").encode() for i in range(count)]


def test_rotates_before_a_write_that_would_pass_the_limit(tmp_path):
    path = tmp_path / "audit.log"
    clock = Clock()
    out = RotatingFile(str(path), max_bytes=1000, clock=clock)
    out.write_lines(lines(10))  # exactly 1000 bytes: fits
    assert path.stat().st_size == 1000 and not out.backups()
    clock.now += 1.5
    out.write_lines(lines(3, tag="f"))
    out.close()
    backups = out.backups()
    assert [os.path.basename(p) for _, p in backups] == ["audit-2026-01-01T00-00-01.500.log"]
    assert os.path.getsize(backups[0][1]) == 1000
    assert path.read_bytes() == b"".join(lines(3, tag="f"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_backup_name_format_and_files_without_extension(tmp_path):
    clock = Clock(T0 + 3723.004)
    out = RotatingFile(str(tmp_path / "audit"), max_bytes=250, clock=clock)
    out.write_lines(lines(3))
    out.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["audit", "audit-2026-01-01T01-02-03.004"]


def test_keeps_the_newest_maxbackup_backups(tmp_path):
    clock = Clock()
    out = RotatingFile(str(tmp_path / "audit.log"), max_bytes=500, max_backups=2, clock=clock)
    for round in range(6):
        clock.now += 60
        out.write_lines(lines(5, tag=f"r{round}"))
    out.close()
    backups = [os.path.basename(p) for _, p in out.backups()]
    # each round fills the file; the next rotates it, named by the time of rotation
    assert backups == ["audit-2026-01-01T00-06-00.000.log", "audit-2026-01-01T00-05-00.000.log"]
    assert (tmp_path / "audit.log").read_bytes().startswith(b"r5")


def test_deletes_backups_older_than_maxage(tmp_path):
    clock = Clock()
    old = tmp_path / "audit-2025-12-20T00-00-00.000.log"
    recent = tmp_path / "audit-2025-12-31T00-00-00.000.log"
    other = tmp_path / "audit-notastamp.log"
    for f in (old, recent, other):
        f.write_text("x\n")
    out = RotatingFile(str(tmp_path / "audit.log"), max_bytes=200, max_age_days=7, clock=clock)
    out.write_lines(lines(3))
    out.close()
    assert not old.exists() and recent.exists() and other.exists()


def test_appends_to_an_existing_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "audit.log"
    path.write_bytes(b"before\n")
    os.chmod(path, 0o640)
    out = RotatingFile(str(path), max_bytes=1000, clock=Clock())
    out.write_lines(lines(1))
    assert path.read_bytes().startswith(b"before\n")
    out.write_lines(lines(10))  # rotates: the new file keeps the old one's mode
    out.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_line_over_the_limit_is_dropped(tmp_path):
    out = RotatingFile(str(tmp_path / "audit.log"), max_bytes=50, clock=Clock())
    assert out.write_lines(lines(1, size=80) + lines(1, size=40)) == 1
    out.close()
    assert (tmp_path / "audit.log").read_bytes() == b"".join(lines(1, size=40))


def test_two_rotations_in_one_millisecond_keep_both(tmp_path):
    out = RotatingFile(str(tmp_path / "audit.log"), max_bytes=100, clock=Clock())
    out.write_lines(lines(3))
    out.close()
    assert len(out.backups()) == 2


def test_the_writer_thread_writes_in_order_with_mode_0600(tmp_path):
    path = tmp_path / "sub" / "audit.log"
    sink = AuditLog(str(path), max_size_mb=1, max_backups=3)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for line in lines(40_000):  # 4 MB: rotated at each MiB
            sink.write(line)
        assert sink.flush()
    finally:
        sink.close()
    files = [p for _, p in RotatingFile(str(path)).backups()][::-1] + [str(path)]
    assert len(files) == 4  # three backups and the current file
    written = b"".join(open(f, "rb").read() for f in files)
    assert written == b"".join(lines(40_000))
    assert all(os.path.getsize(f) <= 1024 * 1024 for f in files)
    assert all(re.fullmatch(r"audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log",
                            os.path.basename(f)) for f in files[:-1])


def test_a_full_disk_is_one_error_and_the_server_goes_on(tmp_path, caplog):
    # /dev/full answers every write with ENOSPC, as a full file system does
    path = tmp_path / "audit.log"
    os.symlink("/dev/full", path)
    sink = AuditLog(str(path))
    try:
        with caplog.at_level(logging.ERROR, logger=auditlog.__name__):
            for batch in range(3):
                for line in lines(5):
                    sink.write(line)
                assert sink.flush()
    finally:
        sink.close()
    errors = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert sink.dropped == 15
