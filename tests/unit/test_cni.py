"""The CNI conflist: exact content for a podCIDR, dual stack, and the writer's atomic,
only-when-changed replacement."""

from __future__ import annotations

import json
import os

import pytest

from k8py.net.cni import CONFLIST_NAME, cni_config, write_cni_config


def test_config_for_a_pod_cidr():
    assert cni_config("10.42.0.0/24", ipam_data_dir="/var/lib/k8py/agent/cni/networks") == {
        "cniVersion": "1.0.0",
        "name": "k8py",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.42.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": "/var/lib/k8py/agent/cni/networks"}},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        ],
    }


def test_dual_stack_mtu_and_bridge_name():
    conf = cni_config(["10.42.1.0/24", "fd00:42:1::/64"], bridge="k8py0", mtu=1450)
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "k8py0" and bridge["mtu"] == 1450
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.1.0/24"}],
                                        [{"subnet": "fd00:42:1::/64"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert "dataDir" not in bridge["ipam"]


@pytest.mark.parametrize("bad", ["10.42.0.1/24", "not-a-cidr", []])
def test_bad_cidrs_are_refused(bad):
    with pytest.raises(ValueError):
        cni_config(bad)


def test_writer_writes_once_atomically(tmp_path):
    conf_dir = tmp_path / "net.d"
    assert write_cni_config(str(conf_dir), "10.42.0.0/24") is True
    path = conf_dir / CONFLIST_NAME
    assert json.loads(path.read_text()) == cni_config("10.42.0.0/24")
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    inode = os.stat(path).st_ino
    assert write_cni_config(str(conf_dir), "10.42.0.0/24") is False
    assert os.stat(path).st_ino == inode
    assert write_cni_config(str(conf_dir), "10.42.3.0/24") is True
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.42.3.0/24"}]]
    assert sorted(os.listdir(conf_dir)) == [CONFLIST_NAME]  # no temp files left
