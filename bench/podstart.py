"""Pod start benchmark. Needs root, containerd, runc and the CNI plugins.

    .venv/bin/python bench/podstart.py [--pods 30] [--keep]

Everything runs in a network namespace the benchmark creates (this process's thread enters
it, so containerd and the pods' bridge live there; the file system is the host's), on a temp
data dir, with containerd started and supervised by the agent's own `run_containerd` and
the agent's CNI config (bridge + host-local over 10.88.0.0/24, portmap).

Figures:
1. The raw CRI floor (`cri_floor`): RunPodSandbox + CreateContainer + StartContainer of a
   busybox `sleep 3600`, measured directly over CRI, one pod after another (p50/p99 of the
   total and of each call), then the same `--pods` pods started all at once (wall time and
   per-pod p50/p99, as parallel pod workers would); then StopPodSandbox and
   RemovePodSandbox per pod.
2. The kubelet (`kubelet_figures`): a `k8py server --disable-agent` process and a
   standalone `k8py agent --kubeconfig` process (its own containerd, the busybox image
   dropped in its airgap directory), in the same namespace. Create→Running latency as seen
   through a watch, for `--pods` pods created one after another (each waiting for the last)
   and then all at once; a 50-replica Deployment to all Ready; then the agent's resident
   memory (VmRSS) and CPU (utime+stime over wall time) while 20 pods run idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import netns, rss_mb, stop_process  # noqa: E402
from k8py.agent import cgroups  # noqa: E402
from k8py.api.resources import builtin  # noqa: E402
from k8py.client.client import Client  # noqa: E402
from k8py.client.http import HttpTransport  # noqa: E402
from k8py.client.informer import Informer  # noqa: E402
from k8py.agent.containerd import run_containerd, socket_path  # noqa: E402
from k8py.runtime import cri_pb2 as pb  # noqa: E402
from k8py.runtime.cri import CriClient  # noqa: E402
from k8py.runtime.images import BUSYBOX_IMAGE, build_busybox_image, import_bytes  # noqa: E402

POD_CIDR = "10.88.0.0/24"


def write_cni(data_dir: str) -> None:
    conf_dir = os.path.join(data_dir, "agent", "etc", "cni", "net.d")
    ipam_dir = os.path.join(data_dir, "agent", "cni", "networks")
    try:
        from k8py.net.cni import write_cni_config
    except ImportError:  # before k8py.net.cni existed: the same bridge network inline
        os.makedirs(conf_dir, exist_ok=True)
        with open(os.path.join(conf_dir, "10-k8py.conflist"), "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "k8py", "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
                "hairpinMode": True, "ipam": {"type": "host-local", "dataDir": ipam_dir,
                                              "ranges": [[{"subnet": POD_CIDR}]],
                                              "routes": [{"dst": "0.0.0.0/0"}]}}]}, f)
        return
    write_cni_config(conf_dir, POD_CIDR, ipam_data_dir=ipam_dir)


@contextlib.asynccontextmanager
async def runtime(data_dir: str):
    """containerd under the agent's supervisor, busybox imported: yields a CriClient."""
    write_cni(data_dir)
    ready = asyncio.Event()
    task = asyncio.create_task(run_containerd(data_dir, ready))
    sock = socket_path(data_dir)
    cri = CriClient(sock)
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, task], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()
        await import_bytes(await asyncio.to_thread(build_busybox_image), sock)
        yield cri
    finally:
        with contextlib.suppress(Exception):
            for sandbox in await cri.list_pod_sandbox():
                await cri.stop_pod_sandbox(sandbox.id)
                await cri.remove_pod_sandbox(sandbox.id)
                cgroups.remove_pod_cgroups(sandbox.metadata.uid)
        await cri.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def sandbox_config(data_dir: str, name: str) -> pb.PodSandboxConfig:
    uid = str(uuid.uuid4())
    log_dir = os.path.join(data_dir, "agent", "logs", f"bench_{name}_{uid}")
    os.makedirs(os.path.join(log_dir, "sleep"), exist_ok=True)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="bench"),
        hostname=name, log_directory=log_dir,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroups.pod_cgroup_parent(uid)))


async def start_pod(cri: CriClient, data_dir: str, name: str) -> tuple[str, dict[str, float]]:
    """One pod with one busybox `sleep 3600`: its sandbox id and each call's seconds."""
    config = sandbox_config(data_dir, name)
    times = {}
    t0 = time.perf_counter()
    sandbox = await cri.run_pod_sandbox(config)
    t1 = time.perf_counter()
    container = await cri.create_container(sandbox, pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="sleep"), image=pb.ImageSpec(image=BUSYBOX_IMAGE),
        command=["sleep", "3600"], log_path="sleep/0.log"), config)
    t2 = time.perf_counter()
    await cri.start_container(container)
    t3 = time.perf_counter()
    times.update(run=t1 - t0, create=t2 - t1, start=t3 - t2, total=t3 - t0)
    return sandbox, times


async def stop_pod(cri: CriClient, sandbox: str) -> dict[str, float]:
    t0 = time.perf_counter()
    await cri.stop_pod_sandbox(sandbox)
    t1 = time.perf_counter()
    await cri.remove_pod_sandbox(sandbox)
    t2 = time.perf_counter()
    return {"stop": t1 - t0, "remove": t2 - t1}


def quantiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"p50 {statistics.median(values) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"


async def cri_floor(cri: CriClient, data_dir: str, pods: int) -> dict[str, list[float]]:
    """The raw CRI floor: pods started one after another, then all at once; then stopped
    and removed. Prints the figures; returns the samples by call."""
    samples: dict[str, list[float]] = {}
    sandboxes = []
    await start_pod(cri, data_dir, "warmup")  # first sandbox creates cni0, caches the image
    for i in range(pods):
        sandbox, times = await start_pod(cri, data_dir, f"seq-{i}")
        sandboxes.append(sandbox)
        for key, value in times.items():
            samples.setdefault(key, []).append(value)
    print(f"raw CRI floor, {pods} pods one after another (busybox sleep 3600):")
    for key, label in (("total", "Run+Create+Start"), ("run", "  RunPodSandbox"),
                       ("create", "  CreateContainer"), ("start", "  StartContainer")):
        print(f"  {label:<18} {quantiles(samples[key])}")
    stops: dict[str, list[float]] = {}
    for sandbox in sandboxes:
        for key, value in (await stop_pod(cri, sandbox)).items():
            stops.setdefault(key, []).append(value)
    print(f"  {'StopPodSandbox':<18} {quantiles(stops['stop'])}")
    print(f"  {'RemovePodSandbox':<18} {quantiles(stops['remove'])}")
    samples.update(stops)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(start_pod(cri, data_dir, f"par-{i}")
                                     for i in range(pods)))
    wall = time.perf_counter() - t0
    totals = [times["total"] for _, times in results]
    print(f"raw CRI floor, {pods} pods at once: all started in {wall * 1000:.0f} ms; "
          f"per pod {quantiles(totals)}")
    t0 = time.perf_counter()
    await asyncio.gather(*(stop_pod(cri, sandbox) for sandbox, _ in results))
    print(f"  stopped and removed all at once in {(time.perf_counter() - t0) * 1000:.0f} ms")
    samples["parallel_total"] = totals
    return samples


PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")
DEPLOYMENTS = builtin("apps/v1", "deployments")


def bench_pod(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "sleep", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}}


def running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def proc_figures(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds so far) of a process."""
    rss = rss_mb(pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_for(check, limit: float, what: str):
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: not within {limit:.0f} s: {what}")
        await asyncio.sleep(0.02)


async def kubelet_figures(root: str, pods: int) -> None:
    """Server and agent processes; figures through the API as a user sees them."""
    server_dir, agent_dir = os.path.join(root, "server"), os.path.join(root, "agent")
    kubeconfig = os.path.join(root, "kubeconfig.yaml")
    images = os.path.join(agent_dir, "agent", "images")
    os.makedirs(images)
    with open(os.path.join(images, "busybox.tar"), "wb") as f:
        f.write(await asyncio.to_thread(build_busybox_image))
    logs = open(os.path.join(root, "processes.log"), "w")
    k8py = [sys.executable, "-m", "k8py"]
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen(
        k8py + ["server", "--disable-agent", "--data-dir", server_dir, "--bind-address",
                "127.0.0.1", "--write-kubeconfig", kubeconfig],
        stdout=logs, stderr=subprocess.STDOUT, cwd=cwd)
    agent = None
    client = None
    try:
        await wait_for(lambda: os.path.exists(kubeconfig), 30, "server up")
        agent = subprocess.Popen(
            k8py + ["agent", "--kubeconfig", kubeconfig, "--data-dir", agent_dir,
                    "--node-name", "bench-node", "--node-ip", "127.0.0.1"],
            stdout=logs, stderr=subprocess.STDOUT, cwd=cwd)
        client = Client(HttpTransport.from_kubeconfig(kubeconfig, "k8py-bench"))

        async def node_ready():
            try:
                node = await client.get(NODES, "bench-node")
            except Exception:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (node.get("status") or {}).get("conditions") or [])

        await wait_for(node_ready, 90, "node Ready")
        watched = Informer(client, PODS, "default", label_selector="bench=podstart")
        seen_running: dict[str, float] = {}

        def observe(pod: dict) -> None:
            name = pod["metadata"]["name"]
            if running(pod) and name not in seen_running:
                seen_running[name] = time.perf_counter()

        watched.add_handlers(observe, lambda old, new: observe(new))
        informer = asyncio.create_task(watched.run())
        await watched.synced.wait()
        labels = {"bench": "podstart"}

        created: dict[str, float] = {}
        for i in range(pods):
            name = f"one-{i}"
            created[name] = time.perf_counter()
            await client.create(PODS, bench_pod(name, labels))
            await wait_for(lambda: name in seen_running, 60, f"{name} Running")
        latencies = [seen_running[n] - created[n] for n in created]
        print(f"kubelet: create->Running through a watch, {pods} pods one after another: "
              f"{quantiles(latencies)}")
        rss, _ = proc_figures(agent.pid)
        print(f"  agent RSS with {pods} pods: {rss:.0f} MB")
        for name in created:
            await client.delete(PODS, name, "default")
        await wait_for(lambda: not watched.list(), 120, "pods gone")

        created.clear()
        began = time.perf_counter()
        for i in range(pods):
            created[f"many-{i}"] = time.perf_counter()
        await asyncio.gather(*(client.create(PODS, bench_pod(n, labels)) for n in created))
        await wait_for(lambda: all(n in seen_running for n in created), 120, "all Running")
        latencies = [seen_running[n] - created[n] for n in created]
        print(f"kubelet: {pods} pods created at once: all Running in "
              f"{(max(seen_running[n] for n in created) - began) * 1000:.0f} ms; per pod "
              f"{quantiles(latencies)}")
        await asyncio.gather(*(client.delete(PODS, n, "default") for n in created))
        await wait_for(lambda: not watched.list(), 120, "pods gone")

        template = bench_pod("x", labels)
        began = time.perf_counter()
        await client.create(DEPLOYMENTS, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"replicas": 50, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": template["spec"]}}})

        async def deployment_ready(count):
            deployment = await client.get(DEPLOYMENTS, "bench", "default")
            return (deployment.get("status") or {}).get("readyReplicas") == count

        await wait_for(lambda: deployment_ready(50), 300, "50 replicas Ready")
        print(f"kubelet: 50-replica Deployment: all Ready "
              f"{time.perf_counter() - began:.1f} s after create")
        await client.patch(DEPLOYMENTS, "bench", {"spec": {"replicas": 20}}, "default")
        await wait_for(lambda: len(watched.list()) == 20, 120, "scaled to 20")
        await asyncio.sleep(10)  # let the scale-down settle before measuring idle
        rss0, cpu0 = proc_figures(agent.pid)
        t0 = time.monotonic()
        await asyncio.sleep(30)
        rss1, cpu1 = proc_figures(agent.pid)
        share = (cpu1 - cpu0) / (time.monotonic() - t0) * 100
        print(f"  agent idle with 20 pods: RSS {rss1:.0f} MB, CPU {share:.2f}% of a core "
              f"(30 s)")
        await client.delete(DEPLOYMENTS, "bench", "default")
        await wait_for(lambda: not watched.list(), 120, "deployment's pods gone")
        informer.cancel()
        await asyncio.gather(informer, return_exceptions=True)
    finally:
        if client is not None:
            await client.close()
        for proc in (agent, server):
            stop_process(proc)
        logs.close()


async def main(args) -> None:
    from k8py.agent import cgroups

    root = tempfile.mkdtemp(prefix="k8py-podstart-")
    data_dir = os.path.join(root, "data")
    existing = cgroups.pod_cgroup_uids()  # the bench removes only the pod cgroups it made
    try:
        with netns(f"k8py-bench-{uuid.uuid4().hex[:8]}"):
            if not args.skip_cri:
                async with runtime(data_dir) as cri:
                    await cri_floor(cri, data_dir, args.pods)
                # the agent's network is another subnet on a bridge of the same name
                subprocess.run(["ip", "link", "delete", "cni0"], check=False,
                               capture_output=True)
            if not args.skip_kubelet:
                await kubelet_figures(root, args.pods)
    finally:
        for uid in cgroups.pod_cgroup_uids() - existing:
            cgroups.remove_pod_cgroups(uid)
        if not args.keep:
            with open("/proc/self/mounts") as f:
                mounts = [line.split()[1] for line in f if line.split()[1].startswith(root)]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], check=False)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    parser.add_argument("--skip-cri", action="store_true", help="no raw CRI floor")
    parser.add_argument("--skip-kubelet", action="store_true", help="no kubelet figures")
    if os.geteuid() != 0:
        sys.exit("bench/podstart.py needs root (containerd, network namespaces)")
    asyncio.run(main(parser.parse_args()))
