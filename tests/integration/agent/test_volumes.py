"""Pod volumes against a real API server (in the test loop), on a temp dir: configMap and
secret files with items, modes and the `..data` swap (an in-place update becomes visible
through the same paths; an open old file keeps its content), tmpfs for secrets and
`medium: Memory` (unmounted by cleanup), hostPath type checks, downwardAPI and projected
volumes (the service-account token from the TokenRequest API), and the CRI mounts. Needs root
for the tmpfs mounts."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from k8py.agent.kubelet.volumes import VolumeError, VolumeManager, mounts_under
from k8py.api import errors
from k8py.api.resources import builtin
from k8py.runtime import cri_pb2
from tests.integration.controllers.conftest import start_control_plane

CONFIGMAPS = builtin("v1", "configmaps")
SECRETS = builtin("v1", "secrets")
SERVICEACCOUNTS = builtin("v1", "serviceaccounts")
PODS = builtin("v1", "pods")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts need root")


@pytest.fixture
async def env(tmp_path):
    async with start_control_plane(tmp_path, nodes=1) as cp:
        manager = VolumeManager(cp.client, str(tmp_path / "pods"), cp.nodes.names[0])
        uids: list[str] = []
        try:
            yield cp, manager, uids
        finally:
            for uid in uids:
                await manager.cleanup(uid)
            assert not mounts_under(str(tmp_path / "pods"))


def make_pod(uid, volumes, **spec):
    return {"metadata": {"name": "vol-pod", "namespace": "default", "uid": uid,
                         "labels": {"app": "v", "tier": "web"},
                         "annotations": {"team": "core"}},
            "spec": {"nodeName": "sim-node-0", "volumes": volumes,
                     "containers": [{"name": "app", "image": "busybox",
                                     "resources": {"limits": {"memory": "64Mi"}}}], **spec}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read(path) -> str:
    with open(path) as f:
        return f.read()


async def test_config_map_files_and_atomic_update(env):
    cp, manager, uids = env
    await cp.client.create(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "default"},
                                        "data": {"a.conf": "one", "b.conf": "two"},
                                        "binaryData": {"blob": b64(b"\x00\x01")}})
    pod = make_pod("uid-cm", [
        {"name": "all", "configMap": {"name": "cfg", "defaultMode": 0o640}},
        {"name": "some", "configMap": {"name": "cfg", "items": [
            {"key": "a.conf", "path": "conf/a", "mode": 0o600}]}}])
    uids.append("uid-cm")
    paths = await manager.prepare(pod)
    root = paths["all"]
    assert root == str(manager.volume_dir("uid-cm", "configMap", "all"))
    assert root.endswith("/uid-cm/volumes/kubernetes.io~configmap/all")
    # AtomicWriter layout: ..data → ..<timestamp>, names are symlinks through ..data.
    first_ts = os.readlink(os.path.join(root, "..data"))
    assert first_ts.startswith("..") and os.path.isdir(os.path.join(root, first_ts))
    assert os.readlink(os.path.join(root, "a.conf")) == "..data/a.conf"
    assert sorted(n for n in os.listdir(root) if not n.startswith("..")) == \
        ["a.conf", "b.conf", "blob"]
    assert read(os.path.join(root, "a.conf")) == "one"
    with open(os.path.join(root, "blob"), "rb") as f:
        assert f.read() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(os.path.join(root, "b.conf")).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(os.path.join(root, first_ts)).st_mode) == 0o755
    some = paths["some"]
    assert sorted(n for n in os.listdir(some) if not n.startswith("..")) == ["conf"]
    assert read(os.path.join(some, "conf", "a")) == "one"
    assert stat.S_IMODE(os.stat(os.path.join(some, "conf", "a")).st_mode) == 0o600

    # Nothing changed: nothing rewritten.
    assert await manager.refresh(pod) is False
    assert os.readlink(os.path.join(root, "..data")) == first_ts

    # In-place update: the same paths show the new content; a removed key disappears; a
    # reader holding the old file keeps reading the old content.
    old_handle = open(os.path.join(root, "a.conf"))
    cm = await cp.client.get(CONFIGMAPS, "cfg", "default")
    cm["data"] = {"a.conf": "ONE", "c.conf": "three"}
    cm.pop("binaryData")
    await cp.client.update(CONFIGMAPS, cm)
    assert await manager.refresh(pod) is True
    try:
        assert old_handle.read() == "one"
    finally:
        old_handle.close()
    second_ts = os.readlink(os.path.join(root, "..data"))
    assert second_ts != first_ts and not os.path.exists(os.path.join(root, first_ts))
    assert read(os.path.join(root, "a.conf")) == "ONE"
    assert read(os.path.join(root, "c.conf")) == "three"
    assert not os.path.lexists(os.path.join(root, "b.conf"))
    assert not os.path.lexists(os.path.join(root, "blob"))
    assert read(os.path.join(some, "conf", "a")) == "ONE"
    assert not os.path.lexists(os.path.join(root, "..data_tmp"))


async def test_missing_sources(env):
    cp, manager, uids = env
    uids.append("uid-missing")
    pod = make_pod("uid-missing", [{"name": "cfg", "configMap": {"name": "absent"}}])
    with pytest.raises(VolumeError, match='^MountVolume.SetUp failed for volume "cfg" : '
                                          'configmap "absent" not found$'):
        await manager.prepare(pod)
    pod = make_pod("uid-missing", [{"name": "s", "secret": {"secretName": "absent"}}])
    with pytest.raises(VolumeError, match='secret "absent" not found'):
        await manager.prepare(pod)
    await cp.client.create(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "default"},
                                        "data": {"a": "1"}})
    pod = make_pod("uid-missing", [{"name": "cfg", "configMap": {
        "name": "cfg", "items": [{"key": "zzz", "path": "z"}]}}])
    with pytest.raises(VolumeError, match="configmap references non-existent config key: zzz"):
        await manager.prepare(pod)
    pod = make_pod("uid-missing", [
        {"name": "opt", "configMap": {"name": "absent", "optional": True}},
        {"name": "optkey", "configMap": {"name": "cfg", "optional": True,
                                         "items": [{"key": "zzz", "path": "z"}]}}])
    paths = await manager.prepare(pod)
    assert [n for n in os.listdir(paths["opt"]) if not n.startswith("..")] == []
    assert [n for n in os.listdir(paths["optkey"]) if not n.startswith("..")] == []


async def test_secret_on_tmpfs_with_modes(env):
    cp, manager, uids = env
    await cp.client.create(SECRETS, {"metadata": {"name": "creds", "namespace": "default"},
                                     "data": {"password": b64(b"s3cret"),
                                              "key": b64(b"\xffbinary")}})
    pod = make_pod("uid-secret", [{"name": "creds", "secret": {"secretName": "creds",
                                                               "defaultMode": 0o400}}],
                   securityContext={"fsGroup": 1234})
    uids.append("uid-secret")
    paths = await manager.prepare(pod)
    root = paths["creds"]
    assert os.path.ismount(root)
    with open(os.path.join(root, "key"), "rb") as f:
        assert f.read() == b"\xffbinary"
    info = os.stat(os.path.join(root, "password"))
    assert stat.S_IMODE(info.st_mode) == 0o400 and info.st_gid == 1234
    await manager.cleanup("uid-secret")
    assert not os.path.exists(manager.pod_dir("uid-secret"))


async def test_empty_dirs(env):
    cp, manager, uids = env
    pod = make_pod("uid-empty", [{"name": "scratch", "emptyDir": {}},
                                 {"name": "mem", "emptyDir": {"medium": "Memory",
                                                              "sizeLimit": "8Mi"}}])
    uids.append("uid-empty")
    paths = await manager.prepare(pod)
    assert stat.S_IMODE(os.stat(paths["scratch"]).st_mode) == 0o777
    assert not os.path.ismount(paths["scratch"])
    assert os.path.ismount(paths["mem"])
    fs = os.statvfs(paths["mem"])
    assert fs.f_blocks * fs.f_frsize == 8 << 20
    with open(os.path.join(paths["scratch"], "data"), "w") as f:
        f.write("x")
    assert await manager.prepare(pod) == paths  # idempotent, content kept
    assert os.path.exists(os.path.join(paths["scratch"], "data"))
    await manager.cleanup("uid-empty")
    assert not mounts_under(manager.pod_dir("uid-empty"))
    assert not os.path.exists(manager.pod_dir("uid-empty"))


async def test_host_paths(env, tmp_path):
    cp, manager, uids = env
    uids.append("uid-host")
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("f")

    def pod(path, kind):
        return make_pod("uid-host", [{"name": "h", "hostPath": {"path": str(path),
                                                                "type": kind}}])
    paths = await manager.prepare(pod(host / "made" / "deep", "DirectoryOrCreate"))
    assert paths["h"] == str(host / "made" / "deep") and os.path.isdir(paths["h"])
    await manager.prepare(pod(host / "new-file", "FileOrCreate"))
    assert (host / "new-file").is_file()
    assert stat.S_IMODE(os.stat(host / "new-file").st_mode) == 0o644
    await manager.prepare(pod(host, "Directory"))
    await manager.prepare(pod(host / "file", "File"))
    await manager.prepare(pod(host / "anything-goes", ""))
    for path, kind, what in ((host / "file", "Directory", "a directory"),
                             (host / "absent", "Directory", "a directory"),
                             (host, "File", "a file"),
                             (host / "file", "Socket", "a socket file"),
                             (host / "file", "CharDevice", "a character device"),
                             (host / "no" / "parent", "FileOrCreate", "a file")):
        with pytest.raises(VolumeError, match=f"hostPath type check failed: {path} is not "
                                              f"{what}$"):
            await manager.prepare(pod(path, kind))
    await manager.prepare(pod("/dev/null", "CharDevice"))


async def test_downward_api_and_projected(env):
    cp, manager, uids = env
    await cp.client.create(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "default"},
                                        "data": {"ca.crt": "CERT"}})
    await cp.client.create(SECRETS, {"metadata": {"name": "creds", "namespace": "default"},
                                     "data": {"user": b64(b"admin")}})
    downward_items = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "team", "fieldRef": {"fieldPath": "metadata.annotations['team']"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                             "divisor": "1m"}}]
    pod = make_pod("uid-proj", [
        {"name": "info", "downwardAPI": {"items": downward_items}},
        {"name": "bundle", "projected": {"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"secret": {"name": "creds"}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {
                "fieldPath": "metadata.namespace"}}]}}]}}])
    uids.append("uid-proj")
    paths = await manager.prepare(pod)
    info = paths["info"]
    assert read(os.path.join(info, "labels")) == 'app="v"\ntier="web"'
    assert read(os.path.join(info, "team")) == "core"
    assert read(os.path.join(info, "name")) == "vol-pod"
    assert read(os.path.join(info, "mem")) == "64"
    assert read(os.path.join(info, "cpu")) == "4000"  # no limit: the node's allocatable
    bundle = paths["bundle"]
    assert os.path.ismount(bundle)
    assert read(os.path.join(bundle, "ca.crt")) == "CERT"
    assert read(os.path.join(bundle, "user")) == "admin"
    assert read(os.path.join(bundle, "ns")) == "default"
    assert stat.S_IMODE(os.stat(os.path.join(bundle, "user")).st_mode) == 0o440

    # A label change reaches the downward API file on refresh.
    pod["metadata"]["labels"]["tier"] = "db"
    assert await manager.refresh(pod) is True
    assert read(os.path.join(info, "labels")) == 'app="v"\ntier="db"'


async def test_projected_service_account_token(env):
    cp, manager, uids = env
    try:
        await cp.client.get(SERVICEACCOUNTS, "default", "default")
    except errors.NotFound:
        await cp.client.create(SERVICEACCOUNTS, {"metadata": {"name": "default",
                                                              "namespace": "default"}})
    # The token is bound to the pod: the pod must exist.
    body = make_pod("", [{"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}],
        serviceAccountName="default")
    del body["metadata"]["uid"]
    pod = await cp.client.create(PODS, body)
    uids.append(pod["metadata"]["uid"])
    paths = await manager.prepare(pod)
    token = read(os.path.join(paths["token"], "token"))
    assert token.count(".") == 2  # a JWT
    assert stat.S_IMODE(os.stat(os.path.join(paths["token"], "token")).st_mode) == 0o644
    assert await manager.refresh(pod) is False  # fresh tokens are kept
    # past 80% of its life the token is renewed (upstream's kubelet token manager)
    key = next(iter(manager._tokens))
    old, issued, lifetime = manager._tokens[key]
    manager._tokens[key] = (old, issued - 0.81 * lifetime, lifetime)
    assert await manager.refresh(pod) is True
    assert read(os.path.join(paths["token"], "token")) != old


async def test_mounts(env):
    cp, manager, uids = env
    await cp.client.create(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "default"},
                                        "data": {"k": "v"}})
    pod = make_pod("uid-mounts", [{"name": "cfg", "configMap": {"name": "cfg"}},
                                  {"name": "scratch", "emptyDir": {}}])
    uids.append("uid-mounts")
    container = {"name": "app", "image": "busybox", "volumeMounts": [
        {"name": "cfg", "mountPath": "/etc/cfg"},
        {"name": "scratch", "mountPath": "/data", "mountPropagation": "HostToContainer"},
        {"name": "scratch", "mountPath": "/logs", "subPath": "logs/app", "readOnly": True}]}
    paths = await manager.prepare(pod)
    await manager.write_etc_hosts(pod, ["10.42.0.9"])
    mounts = manager.mounts(pod, container, paths)
    message_file = manager.termination_message_file("uid-mounts", "app")
    assert mounts == [
        cri_pb2.Mount(container_path="/etc/cfg", host_path=paths["cfg"], readonly=True),
        cri_pb2.Mount(container_path="/data", host_path=paths["scratch"],
                      propagation=cri_pb2.PROPAGATION_HOST_TO_CONTAINER),
        cri_pb2.Mount(container_path="/logs", readonly=True,
                      host_path=os.path.join(paths["scratch"], "logs", "app")),
        cri_pb2.Mount(container_path="/dev/termination-log", host_path=message_file),
        cri_pb2.Mount(container_path="/etc/hosts",
                      host_path=manager.etc_hosts_file("uid-mounts")),
    ]
    assert os.path.isdir(os.path.join(paths["scratch"], "logs", "app"))
    assert stat.S_IMODE(os.stat(message_file).st_mode) == 0o666
    hosts = read(manager.etc_hosts_file("uid-mounts"))
    assert "127.0.0.1\tlocalhost\n" in hosts and "10.42.0.9\tvol-pod\n" in hosts

    os.symlink("/etc", os.path.join(paths["scratch"], "escape"))
    container["volumeMounts"] = [{"name": "scratch", "mountPath": "/x", "subPath": "escape"}]
    with pytest.raises(VolumeError, match="not within volume path"):
        manager.mounts(pod, container, paths)
    container["volumeMounts"] = [{"name": "scratch", "mountPath": "/x", "subPath": "../up"}]
    with pytest.raises(VolumeError, match="without '..'"):
        manager.mounts(pod, container, paths)
    container["volumeMounts"] = [{"name": "nope", "mountPath": "/x"}]
    with pytest.raises(VolumeError, match="cannot find volume 'nope'"):
        manager.mounts(pod, container, paths)
