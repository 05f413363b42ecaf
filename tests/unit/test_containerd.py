"""containerd's generated config, the capability check behind restrict_oom_score_adj, and
pod cgroup clean-up (on a directory tree standing in for /sys/fs/cgroup)."""

from __future__ import annotations

import tomllib

from k8py.agent import cgroups
from k8py.agent.containerd import has_capability, render_config


def test_containerd_config():
    text = render_config("/d/agent/containerd", cni_conf_dir="/d/agent/etc/cni/net.d",
                         cni_bin_dir="/usr/lib/cni", stream_port=12345,
                         restrict_oom_score_adj=True)
    assert 'root = "/d/agent/containerd/root"' in text
    assert 'address = "/d/agent/containerd/containerd.sock"' in text
    assert "restrict_oom_score_adj = true" in text
    assert "SystemdCgroup = false" in text
    assert 'sandbox_image = "k8py.local/pause:3.10"' in text
    assert 'stream_server_address = "127.0.0.1"' in text
    assert 'stream_server_port = "12345"' in text
    assert 'conf_dir = "/d/agent/etc/cni/net.d"' in text
    assert 'snapshotter = "overlayfs"' in text
    parsed = tomllib.loads(text)
    assert parsed["version"] == 2
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_capability_from_proc_status():
    assert not has_capability(24, "Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert has_capability(24, "CapEff:\t000001ffffffffff\n")


def test_pod_cgroups_are_found_and_removed_deepest_first(tmp_path):
    for controller in ("memory", "cpu", "unified"):
        (tmp_path / controller / "k8py" / "podabc" / "c1").mkdir(parents=True)
        (tmp_path / controller / "k8py" / "podother").mkdir(parents=True)
    assert cgroups.pod_cgroup_parent("abc") == "/k8py/podabc"
    assert cgroups.pod_cgroup_uids(str(tmp_path)) == {"abc", "other"}
    assert cgroups.remove_pod_cgroups("abc", str(tmp_path)) == 6
    assert cgroups.pod_cgroup_uids(str(tmp_path)) == {"other"}
    assert cgroups.remove_pod_cgroups("abc", str(tmp_path)) == 0


def test_a_pods_processes_are_read_from_every_hierarchy(tmp_path):
    (tmp_path / "pids" / "k8py" / "podabc" / "c1").mkdir(parents=True)
    (tmp_path / "pids" / "k8py" / "podabc" / "c1" / "cgroup.procs").write_text("11\n12\n")
    (tmp_path / "memory" / "k8py" / "podabc" / "c2").mkdir(parents=True)
    (tmp_path / "memory" / "k8py" / "podabc" / "c2" / "cgroup.procs").write_text("13\n")
    (tmp_path / "k8py" / "podabc").mkdir(parents=True)  # a pure cgroup v2 host's layout
    (tmp_path / "k8py" / "podabc" / "cgroup.procs").write_text("14\n")
    (tmp_path / "pids" / "k8py" / "podother").mkdir(parents=True)
    (tmp_path / "pids" / "k8py" / "podother" / "cgroup.procs").write_text("99\n")
    assert cgroups.pod_processes("abc", str(tmp_path)) == {11, 12, 13, 14}
    assert cgroups.pod_processes("gone", str(tmp_path)) == set()


def test_socket_path_under_the_data_dir_unless_too_long():
    from k8py.agent.containerd import socket_path
    assert socket_path("/var/lib/k8py") == "/var/lib/k8py/agent/containerd/containerd.sock"
    assert socket_path("/x", "unix:///run/containerd/containerd.sock") == (
        "/run/containerd/containerd.sock")
    long_dir = "/tmp/" + "d" * 80
    path = socket_path(long_dir)
    assert path.startswith("/run/k8py/containerd-") and path == socket_path(long_dir + "/")
    assert len(path) + len(".ttrpc") <= 104
