"""Snapshot names, listing, k3s's retention order, the schedule, and the CLI's listing and
deletion over a directory of files (no datastore needed)."""

from __future__ import annotations

import datetime
import json
import os

import yaml
from click.testing import CliRunner

from k8py.cli import cli
from k8py.server import etcdsnapshot
from k8py.server.controllers import cron
from k8py.server.etcdsnapshot import SnapshotFile


def touch(directory, name, mtime=None, size=3):
    path = directory / name
    path.write_bytes(b"x" * size)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_names_are_base_node_unix_time():
    assert etcdsnapshot.snapshot_name("on-demand", "node-1", 1700000000.9) == \
        "on-demand-node-1-1700000000"
    assert etcdsnapshot.node_name("MyHost") == "myhost"


def test_created_comes_from_the_name_else_the_file_time():
    assert etcdsnapshot.created_at("etcd-snapshot-n-1700000000", 5.0) == 1700000000.0
    assert etcdsnapshot.created_at("hand-made", 5.0) == 5.0


def test_listing_skips_partial_files_and_directories(tmp_path):
    touch(tmp_path, "on-demand-n-200")
    touch(tmp_path, "on-demand-n-100")
    touch(tmp_path, ".on-demand-n-300.part")
    (tmp_path / "sub").mkdir()
    names = [s.name for s in etcdsnapshot.list_snapshots(str(tmp_path))]
    assert names == ["on-demand-n-100", "on-demand-n-200"]
    assert etcdsnapshot.list_snapshots(str(tmp_path / "missing")) == []


def test_retention_removes_the_oldest_with_the_prefix_only():
    def snap(name, created):
        return SnapshotFile(name, "/s/" + name, 1, created)

    snapshots = [snap("etcd-snapshot-a-300", 300), snap("etcd-snapshot-b-100", 100),
                 snap("on-demand-a-50", 50), snap("etcd-snapshot-a-200", 200),
                 snap("odd", 150)]
    pruned = etcdsnapshot.to_prune(snapshots, "etcd-snapshot", 1)
    # ordered by the time in the name across nodes, oldest first; other prefixes untouched
    assert [s.name for s in pruned] == ["etcd-snapshot-b-100", "etcd-snapshot-a-200"]
    assert etcdsnapshot.to_prune(snapshots, "etcd-snapshot", 5) == []
    assert etcdsnapshot.to_prune(snapshots, "etcd-snapshot", 0) == []  # k3s: < 1 keeps all


def test_prune_deletes_files_using_mtime_when_the_name_has_no_time(tmp_path):
    touch(tmp_path, "backup-old", mtime=1000)
    touch(tmp_path, "backup-new", mtime=3000)
    touch(tmp_path, "backup-n-2000")
    assert etcdsnapshot.prune(str(tmp_path), "backup", 2) == ["backup-old"]
    assert sorted(os.listdir(tmp_path)) == ["backup-n-2000", "backup-new"]


def test_delete_only_names_in_the_directory(tmp_path):
    touch(tmp_path, "a")
    outside = touch(tmp_path.parent, "outside-file")
    deleted, missing = etcdsnapshot.delete(str(tmp_path), ["a", "b", "../outside-file", ".."])
    assert deleted == ["a"] and missing == ["b", "../outside-file", ".."]
    assert outside.exists()


def test_default_schedule_is_midnight_and_noon_on_the_system_clock():
    zone = datetime.timezone(datetime.timedelta(hours=2))
    schedule = cron.parse(etcdsnapshot.DEFAULT_SCHEDULE)
    after = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=zone)
    first = etcdsnapshot.next_time(schedule, after, zone)
    assert first == datetime.datetime(2024, 3, 2, 0, 0, tzinfo=zone)
    assert etcdsnapshot.next_time(schedule, first, zone) == \
        datetime.datetime(2024, 3, 2, 12, 0, tzinfo=zone)


def test_ls_prints_k3s_columns(tmp_path):
    touch(tmp_path, "on-demand-node-1700000000", size=12345)
    touch(tmp_path, "etcd-snapshot-node-1-1700000100", size=7)
    result = CliRunner().invoke(cli, ["etcd-snapshot", "ls", "--dir", str(tmp_path)],
                                env={"TZ": "UTC"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Name", "Location", "Size", "Created"]
    assert lines[1].split() == ["on-demand-node-1700000000",
                                f"file://{tmp_path}/on-demand-node-1700000000", "12345",
                                "2023-11-14T22:13:20Z"]
    # tabwriter: every column but the last padded to its widest cell plus one space
    assert lines[0].index("Location") == len("etcd-snapshot-node-1-1700000100") + 1
    assert lines[2].startswith("etcd-snapshot-node-1-1700000100 file://")


def test_ls_json_and_yaml_and_alias(tmp_path):
    touch(tmp_path, "on-demand-n-1700000000", size=5)
    for output, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        result = CliRunner().invoke(cli, ["etcd-snapshot", "list", "--dir", str(tmp_path),
                                          "-o", output, "--node-name", "n"])
        assert result.exit_code == 0, result.output
        listing = parse(result.output)
        assert listing["kind"] == "List"
        (item,) = listing["items"]
        assert item["spec"] == {"snapshotName": "on-demand-n-1700000000", "nodeName": "n",
                                "location": f"file://{tmp_path}/on-demand-n-1700000000"}
        assert item["status"]["size"] == "5"


def test_delete_and_prune_commands(tmp_path):
    for t in (100, 200, 300):
        touch(tmp_path, f"on-demand-n-{t}")
    runner = CliRunner()
    result = runner.invoke(cli, ["etcd-snapshot", "delete", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "no snapshots given for removal" in result.output
    result = runner.invoke(cli, ["etcd-snapshot", "delete", "--dir", str(tmp_path),
                                 "on-demand-n-300"])
    assert result.exit_code == 0
    result = runner.invoke(cli, ["etcd-snapshot", "prune", "--dir", str(tmp_path),
                                 "--snapshot-retention", "1"])
    assert result.exit_code == 0
    assert os.listdir(tmp_path) == ["on-demand-n-200"]


def test_server_flags_are_checked():
    runner = CliRunner()
    result = runner.invoke(cli, ["server", "--cluster-reset-restore-path", "/x"])
    assert result.exit_code == 2
    assert "--cluster-reset required with --cluster-reset-restore-path" in result.output
    result = runner.invoke(cli, ["server", "--etcd-snapshot-schedule-cron", "61 * * * *"])
    assert result.exit_code == 2 and "--etcd-snapshot-schedule-cron" in result.output
