"""The pods bound to this node and their workers (upstream's pod workers and PLEG).

`PodManager` watches the pods with `spec.nodeName=<node>` (an informer with that field
selector) and keeps one `pods.PodWorker` per pod uid, woken when its pod changes.

Recovery: `pleg` (upstream's pod lifecycle event generator) relists all sandboxes and
containers every second. A change wakes the pod's worker; a sandbox whose pod is not bound
here any more (after the informer's first list) gets a worker with no pod, which tears it
down. A restarted agent therefore adopts running pods as they are (same container ids, no
restart), and cleans up after pods deleted while it was away. When containerd is down, CRI
calls fail, syncs retry with back-off, and a restarted containerd is picked up by the next
relist.

The agent stopping (SIGTERM) leaves pods running, like upstream's kubelet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet import env as envs
from k8py.agent.kubelet.backoff import Backoff
from k8py.agent.kubelet.events import Recorder
from k8py.agent.kubelet.pods import POD_UID, PODS, SERVICES, PodWorker
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.runtime.cri import CriError

log = logging.getLogger(__name__)

PLEG_PERIOD = 1.0


class PodManager:
    def __init__(self, client: Client, cri, config: AgentConfig, *, node_name: str,
                 node_ip: str, node: Callable[[], dict[str, Any] | None], volumes,
                 network_ready: asyncio.Event, recorder: Recorder | None = None):
        self.client = client
        self.cri = cri
        self.config = config
        self.node_name = node_name
        self.node_ip = node_ip
        self.node = node
        self.volumes = volumes
        self.network_ready = network_ready
        self.recorder = recorder or Recorder(client, node_name)
        self.backoff = Backoff(config.backoff_base, config.backoff_max, config.backoff_reset)
        self.lookup = envs.client_lookup(client)
        self.pods = Informer(client, PODS, field_selector=f"spec.nodeName={node_name}")
        self.services = Informer(client, SERVICES)
        self.workers: dict[str, PodWorker] = {}
        self._finished: dict[str, None] = {}  # uids whose worker ended (bounded)
        self._seen: dict[str, dict[str, int]] = {}  # pleg: uid -> {id: state}

    def services_for(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = pod["metadata"]["namespace"]
        found = self.services.list(namespace)
        if namespace != "default":
            found += [s for s in self.services.list("default")
                      if s["metadata"]["name"] == "kubernetes"]
        return found

    # --- informer handlers ------------------------------------------------------------------

    def _changed(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._finished:
            return
        worker = self.workers.get(uid)
        if worker is None:
            self._spawn(uid, pod)
        else:
            worker.update(pod)

    def _deleted(self, pod: dict[str, Any]) -> None:
        worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            worker.update(None)

    def _spawn(self, uid: str, pod: dict[str, Any] | None) -> PodWorker:
        worker = PodWorker(self, uid, pod)
        self.workers[uid] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"pod-{uid[:8]}")
        worker.task.add_done_callback(lambda task, uid=uid: self._ended(uid, task))
        return worker

    def _ended(self, uid: str, task: asyncio.Task) -> None:
        self.workers.pop(uid, None)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                log.error("pod worker %s failed: %r", uid, error)
        self._finished[uid] = None
        if len(self._finished) > 10000:
            self._finished.pop(next(iter(self._finished)))

    # --- pleg -------------------------------------------------------------------------------

    async def relist(self) -> None:
        sandboxes = await self.cri.list_pod_sandbox()
        containers = await self.cri.list_containers()
        seen: dict[str, dict[str, int]] = {}
        for sandbox in sandboxes:
            uid = sandbox.labels.get(POD_UID)
            if uid:
                seen.setdefault(uid, {})[sandbox.id] = sandbox.state
        for container in containers:
            uid = container.labels.get(POD_UID)
            if uid:
                seen.setdefault(uid, {})[container.id] = container.state
        for uid, states in seen.items():
            worker = self.workers.get(uid)
            if worker is None:
                if self._bound_here(uid) is None:
                    self._finished.pop(uid, None)
                    log.info("pod %s is not bound here any more: removing its sandbox", uid)
                    self._spawn(uid, None)
                continue
            if self._seen.get(uid) != states:
                worker.wake.set()
        for uid in self._seen.keys() - seen.keys():
            worker = self.workers.get(uid)
            if worker is not None:
                worker.wake.set()
        self._seen = seen

    def _bound_here(self, uid: str) -> dict[str, Any] | None:
        for pod in self.pods.list():
            if pod["metadata"]["uid"] == uid:
                return pod
        return None

    async def pleg(self) -> None:
        delay = PLEG_PERIOD
        while True:
            try:
                await self.relist()
                delay = PLEG_PERIOD
            except CriError as exc:
                log.warning("relisting containers: %s", exc.message)
                delay = min(delay * 2, 10.0)
            await asyncio.sleep(delay)

    # --- running ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self.pods.add_handlers(self._changed, lambda old, new: self._changed(new),
                               self._deleted)
        tasks = [asyncio.create_task(self.services.run()),
                 asyncio.create_task(self.pods.run())]
        try:
            await self.pods.synced.wait()
            tasks.append(asyncio.create_task(self.pleg()))
            if ready is not None:
                ready.set()
            await asyncio.gather(*tasks)
        finally:
            workers = [w.task for w in self.workers.values() if w.task]
            for task in tasks + workers:
                task.cancel()
            await asyncio.gather(*tasks, *workers, return_exceptions=True)
