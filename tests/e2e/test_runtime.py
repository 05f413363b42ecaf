"""The runtime side of a node against the real thing: containerd started and supervised by
`run_containerd` on a temp data dir, images built from /bin/busybox and imported, a pod
sandbox and a busybox container driven through `CriClient`, runc and the CNI plugins.

Everything runs inside a network namespace the test creates (`tests.e2e.netns`, which states
the rules): the test's own thread enters it (setns) before containerd starts, so containerd,
its stream server (127.0.0.1) and the pods' bridge live there, while the file system is the
host's (no `ip netns exec` mount namespace).

CNI config (in `<data-dir>/agent/etc/cni/net.d/`): the agent's own conflist from
`k8py.net.cni` over podCIDR 10.88.0.0/24 (bridge `cni0` in the test's netns, isGateway, ipMasq,
hairpin; host-local IPAM with its state under the data dir; portmap), or, if that module is
missing, the same bridge + host-local conflist written inline.

Teardown stops every pod and containerd, kills any process left holding the data dir (shims),
unmounts what is left under it and deletes the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import signal
import sys
import uuid

import pytest
import zstandard

from k8py.agent import cgroups
from k8py.agent.airgap import images_dir, run_airgap
from k8py.agent.containerd import run_containerd, socket_path
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriClient, NotFound
from k8py.runtime.images import BUSYBOX_IMAGE, PAUSE_IMAGE, build_busybox_image, import_bytes
from tests.conftest import eventually
from tests.e2e import netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("containerd"), reason="needs containerd"),
]

POD_CIDR = "10.88.0.0/24"


def write_cni(data_dir: str) -> None:
    conf_dir = os.path.join(data_dir, "agent", "etc", "cni", "net.d")
    ipam_dir = os.path.join(data_dir, "agent", "cni", "networks")
    try:
        from k8py.net.cni import write_cni_config
    except ImportError:
        os.makedirs(conf_dir, exist_ok=True)
        with open(os.path.join(conf_dir, "10-k8py.conflist"), "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "k8py", "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
                "hairpinMode": True, "ipam": {"type": "host-local", "dataDir": ipam_dir,
                                              "ranges": [[{"subnet": POD_CIDR}]],
                                              "routes": [{"dst": "0.0.0.0/0"}]}}]}, f)
        return
    write_cni_config(conf_dir, POD_CIDR, ipam_data_dir=ipam_dir)


class Runtime:
    def __init__(self, data_dir: str, ready: asyncio.Event, task: asyncio.Task,
                 cri: CriClient):
        self.data_dir, self.ready, self.task, self.cri = data_dir, ready, task, cri
        self.socket = socket_path(data_dir)
        self.logs = os.path.join(data_dir, "agent", "logs")

    def sandbox_config(self, name: str) -> pb.PodSandboxConfig:
        uid = str(uuid.uuid4())
        log_dir = os.path.join(self.logs, f"default_{name}_{uid}")
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
            hostname=name, log_directory=log_dir,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroups.pod_cgroup_parent(uid)))

    async def run_pod(self, name: str, command: list[str]) -> tuple[str, str,
                                                                    pb.PodSandboxConfig]:
        config = self.sandbox_config(name)
        sandbox = await self.cri.run_pod_sandbox(config)
        os.makedirs(os.path.join(config.log_directory, "main"), exist_ok=True)
        container = await self.cri.create_container(sandbox, pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main"),
            image=pb.ImageSpec(image=BUSYBOX_IMAGE), command=command,
            log_path="main/0.log"), config)
        await self.cri.start_container(container)
        return sandbox, container, config

    async def remove_all(self) -> None:
        for sandbox in await self.cri.list_pod_sandbox():
            await self.cri.stop_pod_sandbox(sandbox.id)
            await self.cri.remove_pod_sandbox(sandbox.id)
            cgroups.remove_pod_cgroups(sandbox.metadata.uid)


async def until_ready(ready: asyncio.Event, task: asyncio.Task, timeout: float = 60) -> None:
    """Wait for containerd to be ready; the daemon's own error if it fails first."""
    waiter = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait([waiter, task], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()
    assert ready.is_set(), f"containerd not ready within {timeout}s"


@pytest.fixture
async def runtime(tmp_path):
    data_dir = str(tmp_path / "data")
    write_cni(data_dir)
    sock = socket_path(data_dir)
    with netns.entered():
        ready = asyncio.Event()
        task = asyncio.create_task(run_containerd(data_dir, ready, backoff=(0.2, 1.0)))
        cri = CriClient(sock)
        try:
            await until_ready(ready, task)
            await import_bytes(await asyncio.to_thread(build_busybox_image), sock)
            yield Runtime(data_dir, ready, task, cri)
        finally:
            try:
                if ready.is_set():
                    await asyncio.wait_for(Runtime(data_dir, ready, task, cri).remove_all(), 60)
            finally:
                await cri.close()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                netns.kill_leftovers(data_dir)


async def test_pod_runs_with_logs_exec_network_and_cgroups(runtime):
    cri = runtime.cri
    assert (await cri.version()).runtime_name == "containerd"
    refs = {tag for image in await cri.list_images() for tag in image.repo_tags}
    assert {PAUSE_IMAGE, BUSYBOX_IMAGE} <= refs

    sandbox, container, config = await runtime.run_pod(
        "hello", ["sh", "-c", "echo hello; sleep 1000"])
    log_path = os.path.join(config.log_directory, "main", "0.log")

    def logged():
        with contextlib.suppress(FileNotFoundError), open(log_path) as f:
            return f.read()
    text = await eventually(lambda: "hello" in (logged() or "") and logged(), timeout=10,
                            what="hello in the container log")
    assert re.match(r"^\d{4}-\d\d-\d\dT\S+ stdout F hello$", text.splitlines()[0]), text

    status = (await cri.container_status(container)).status
    assert status.state == pb.CONTAINER_RUNNING and status.log_path == log_path
    assert await cri.exec_sync(container, ["echo", "hi"], timeout=10) == (0, b"hi\n", b"")
    code, _, _ = await cri.exec_sync(container, ["sh", "-c", "echo oops >&2; exit 3"], 10)
    assert code == 3

    sandbox_status = (await cri.pod_sandbox_status(sandbox)).status
    assert sandbox_status.state == pb.SANDBOX_READY  # the pause process keeps running
    network = sandbox_status.network
    assert network.ip.startswith("10.88.0."), network
    code, out, _ = await cri.exec_sync(container, ["ip", "-4", "addr", "show", "eth0"], 10)
    assert network.ip.encode() in out

    uid = config.metadata.uid
    assert uid in cgroups.pod_cgroup_uids()
    assert os.path.isdir(f"/sys/fs/cgroup/memory/k8py/pod{uid}/{container}")

    await cri.stop_container(container, timeout=1)
    assert (await cri.container_status(container)).status.state == pb.CONTAINER_EXITED
    await cri.remove_container(container)
    with pytest.raises(NotFound):
        await cri.container_status(container)
    await cri.stop_pod_sandbox(sandbox)
    await cri.remove_pod_sandbox(sandbox)
    assert await cri.list_pod_sandbox() == []
    assert cgroups.remove_pod_cgroups(uid) >= 1
    assert uid not in cgroups.pod_cgroup_uids()


async def test_containerd_is_restarted_after_sigkill_and_pods_survive(runtime):
    cri = runtime.cri
    _, container, _ = await runtime.run_pod("survivor", ["sleep", "1000"])
    pid_file = os.path.join(runtime.data_dir, "agent", "containerd", "containerd.pid")
    with open(pid_file) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: not runtime.ready.is_set(), timeout=10,
                     what="ready cleared after containerd died")
    await until_ready(runtime.ready, runtime.task)
    with open(pid_file) as f:
        assert int(f.read()) != pid
    assert (await cri.version()).runtime_name == "containerd"  # same client, reconnected
    status = (await cri.container_status(container)).status
    assert status.state == pb.CONTAINER_RUNNING
    assert await cri.exec_sync(container, ["true"], timeout=10) == (0, b"", b"")


async def k8py(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "k8py", "images", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_images_cli(runtime, tmp_path):
    d = ["--data-dir", runtime.data_dir]
    archive = str(tmp_path / "demo.tar")
    code, out, err = await k8py("build-busybox", "--name", "k8py.local/demo:1", "-o", archive)
    assert code == 0, err
    gz = archive + ".gz"
    with open(archive, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)

    code, out, err = await k8py("import", *d, gz)
    assert code == 0, err
    assert out.strip() == f"imported k8py.local/demo:1 from {gz}"
    code, out, _ = await k8py("ls", *d)
    assert code == 0 and out.splitlines()[0].split() == ["IMAGE", "IMAGE", "ID", "SIZE"]
    assert "k8py.local/demo:1" in out and PAUSE_IMAGE in out
    code, out, err = await k8py("rm", *d, "k8py.local/demo:1")
    assert (code, out.strip()) == (0, "deleted k8py.local/demo:1"), err
    code, out, _ = await k8py("ls", "-q", *d)
    assert "k8py.local/demo:1" not in out.split()

    code, out, err = await k8py("rm", *d, "k8py.local/demo:1")
    assert code == 1 and err == "k8py: error: no such image: k8py.local/demo:1\n"
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(b"nonsense")
    code, out, err = await k8py("import", *d, str(bad))
    assert code == 1 and len(err.splitlines()) == 1 and "bad.tar.zst" in err, err
    code, out, err = await k8py("ls", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 1 and err.startswith("k8py: error: cannot reach containerd at "), err
    assert "Traceback" not in err and len(err.splitlines()) == 1


async def test_airgap_directory_imports_dropped_archives(runtime, caplog):
    caplog.set_level(logging.INFO, logger="k8py.agent.airgap")
    directory = images_dir(runtime.data_dir)
    task = asyncio.create_task(run_airgap(runtime.data_dir, runtime.socket, runtime.ready,
                                          interval=0.1, settle=0))
    try:
        await eventually(lambda: os.path.isdir(directory), what="images dir")
        with open(os.path.join(directory, "broken.tar.gz"), "wb") as f:
            f.write(gzip.compress(b"not a tar"))
        data = await asyncio.to_thread(build_busybox_image, name="k8py.local/airgap:1")
        tmp = os.path.join(directory, ".airgap.part")
        with open(tmp, "wb") as f:
            f.write(zstandard.ZstdCompressor().compress(data))
        os.rename(tmp, os.path.join(directory, "airgap.tar.zst"))

        async def imported():
            return await runtime.cri.image_status("k8py.local/airgap:1") is not None
        await eventually(imported, timeout=30, interval=0.1, what="airgap image imported")
        await eventually(lambda: "cannot import" in caplog.text, what="bad file logged")
        assert re.search(r"airgap: cannot import \S+broken.tar.gz: not a readable tar",
                         caplog.text)
        # the image is visible to CRI a moment before the importer logs it
        await eventually(lambda: "airgap: imported k8py.local/airgap:1 from airgap.tar.zst"
                         in caplog.text, what="the import logged")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
