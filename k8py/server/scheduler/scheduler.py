"""The scheduler's loop: pending pods in, bindings out.

Informers on nodes and pods keep a `Snapshot` current. Pods without a node whose
`schedulerName` is ours (or unset) are queued; one loop takes them in order and runs a
scheduling cycle (`framework.Framework`). A placed pod is assumed onto its node at once, so
the next cycle counts it, and bound through `pods/binding` in the background (bounded
concurrency): decisions stay sequential, bindings overlap. A failed binding forgets the
assumption and retries the pod with backoff.

Claims, volumes and StorageClasses are in the snapshot too, for the VolumeBinding filter.
Before binding a pod, each of its unbound claims of a `WaitForFirstConsumer` class is
annotated `volume.kubernetes.io/selected-node: <node>` (upstream's volume binder), which the
PV controller and the provisioner act on. Unlike upstream (whose PreBind waits for the claims
to be bound), the pod is bound at once; its kubelet waits until the claims are bound.

A pod that fits nowhere gets `PodScheduled=False` (reason Unschedulable) with upstream's
message and a FailedScheduling Event, and waits: any change that could make room (a node
added or changed, a pod deleted or finished) queues the waiting pods again, as does a
periodic sweep. A bound pod gets a Normal Scheduled Event, as upstream writes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.events import EventRecorder
from k8py.client.informer import SharedInformers, key_of
from k8py.client.workqueue import ShutDown, WorkQueue
from k8py.server.controllers.persistentvolume import claim_class
from k8py.server.scheduler.framework import (Framework, PodInfo, Snapshot,
                                             unschedulable_message)
from k8py.server.scheduler.plugins import default_plugins

log = logging.getLogger(__name__)

PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")
CLAIMS = builtin("v1", "persistentvolumeclaims")
VOLUMES = builtin("v1", "persistentvolumes")
CLASSES = builtin("storage.k8s.io/v1", "storageclasses")
SELECTED_NODE = "volume.kubernetes.io/selected-node"
NAME = "default-scheduler"
RETRY_SWEEP = 30.0       # seconds between retries of all unschedulable pods
CHANGE_DELAY = 0.2       # batch retries after a cluster change
BIND_CONCURRENCY = 64


def _name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def _finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Scheduler:
    def __init__(self, client: Client, informers: SharedInformers, name: str = NAME,
                 plugins=None):
        self.client = client
        self.name = name
        self.events = EventRecorder(client, name)
        self.snapshot = Snapshot()
        self.framework = Framework(plugins or default_plugins())
        self.queue = WorkQueue(base_delay=1.0, max_delay=10.0)
        self.unschedulable: dict[str, str] = {}  # pod key -> last message written
        self._binds = asyncio.Semaphore(BIND_CONCURRENCY)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self.scheduled = 0  # pods bound since start, for benchmarks
        self.nodes = informers.informer(NODES)
        self.pods = informers.informer(PODS)
        self.nodes.add_handlers(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handlers(self._pod_seen, lambda old, new: self._pod_seen(new),
                               self._pod_deleted)
        for resource, table, key in ((CLAIMS, self.snapshot.claims, key_of),
                                     (VOLUMES, self.snapshot.volumes, _name),
                                     (CLASSES, self.snapshot.classes, _name)):
            informers.informer(resource).add_handlers(
                *self._storage_handlers(table, key))

    def _storage_handlers(self, table: dict, key):
        def changed(obj: dict[str, Any]) -> None:
            table[key(obj)] = obj
            self._retry_waiting()

        def deleted(obj: dict[str, Any]) -> None:
            table.pop(key(obj), None)
        return changed, lambda old, new: changed(new), deleted

    # --- keeping the snapshot current --------------------------------------------------------

    def _node_added(self, node: dict[str, Any]) -> None:
        self.snapshot.set_node(node)
        self._retry_waiting()

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.snapshot.set_node(new)
        if old.get("spec") != new.get("spec") or old["metadata"].get("labels") != \
                new["metadata"].get("labels") or (old.get("status") or {}).get(
                "allocatable") != (new.get("status") or {}).get("allocatable"):
            self._retry_waiting()

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self.snapshot.remove_node(node["metadata"]["name"])

    def _ours(self, pod: dict[str, Any]) -> bool:
        return (pod.get("spec") or {}).get("schedulerName", NAME) in (self.name, "")

    def _pod_seen(self, pod: dict[str, Any]) -> None:
        key = key_of(pod)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self.unschedulable.pop(key, None)
            if _finished(pod):
                if key in self.snapshot.placed:
                    self.snapshot.unplace(key)
                    self._retry_waiting()
                return
            placed = self.snapshot.placed.get(key)
            if placed is None or placed.node_name != node or \
                    placed.uid != pod["metadata"].get("uid"):
                self.snapshot.place(PodInfo.of(pod), node)
        elif self._ours(pod) and not pod["metadata"].get("deletionTimestamp") and \
                not _finished(pod) and key not in self._in_flight:
            self.queue.add(key)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = key_of(pod)
        self.unschedulable.pop(key, None)
        if key in self.snapshot.placed and key not in self._in_flight:
            self.snapshot.unplace(key)
            self._retry_waiting()

    def _retry_waiting(self) -> None:
        for key in self.unschedulable:
            self.queue.add_after(key, CHANGE_DELAY)

    # --- scheduling --------------------------------------------------------------------------

    async def _schedule(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") or key in self._in_flight \
                or pod["metadata"].get("deletionTimestamp") or _finished(pod):
            return
        info = PodInfo.of(pod)
        result = self.framework.schedule(info, self.snapshot)
        if result.node is None:
            message = unschedulable_message(result, len(self.snapshot.nodes))
            if self.unschedulable.get(key) != message:
                self.unschedulable[key] = message
                self._spawn(self._report_unschedulable(pod, message))
            else:
                self.unschedulable[key] = message
            return
        self.unschedulable.pop(key, None)
        self.snapshot.place(info, result.node)  # assume: the next cycle counts it
        self._in_flight.add(key)
        await self._binds.acquire()
        self._spawn(self._bind(pod, result.node))

    async def _select_node(self, pod: dict[str, Any], node: str) -> None:
        """Tell the unbound WaitForFirstConsumer claims of `pod` where it goes."""
        namespace = pod["metadata"]["namespace"]
        for volume in (pod.get("spec") or {}).get("volumes") or ():
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            claim = self.snapshot.claims.get(f"{namespace}/{name}") if name else None
            if claim is None or (claim.get("spec") or {}).get("volumeName") or \
                    (claim["metadata"].get("annotations") or {}).get(SELECTED_NODE) == node:
                continue
            storage_class = self.snapshot.classes.get(claim_class(claim)) or {}
            if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
                await self.client.patch(CLAIMS, name, {"metadata": {
                    "annotations": {SELECTED_NODE: node}}}, namespace, patch_type="merge")

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        metadata = pod["metadata"]
        key = key_of(pod)
        try:
            await self._select_node(pod, node)
            await self.client.create_subresource(PODS, metadata["name"], metadata["namespace"],
                                                 "binding", {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": metadata["name"], "namespace": metadata["namespace"],
                             "uid": metadata["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
            self.scheduled += 1
        except errors.StatusError as exc:
            log.debug("binding %s to %s failed: %s", key, node, exc.message)
            self.snapshot.unplace(key)
            if not isinstance(exc, errors.NotFound):
                self.queue.add_rate_limited(key)
            return
        finally:
            self._in_flight.discard(key)
            self._binds.release()
        await self._event(pod, "Normal", "Scheduled",
                          f"Successfully assigned {metadata['namespace']}/{metadata['name']} "
                          f"to {node}")

    async def _report_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        metadata = pod["metadata"]
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastProbeTime": None,
                     "lastTransitionTime": timestamps.now()}
        try:
            await self.client.patch(PODS, metadata["name"],
                                    {"metadata": {"uid": metadata["uid"]},
                                     "status": {"conditions": [condition]}},
                                    metadata["namespace"], patch_type="strategic",
                                    subresource="status")
        except errors.StatusError as exc:
            log.debug("cannot mark %s/%s unschedulable: %s", metadata["namespace"],
                      metadata["name"], exc.message)
            return
        await self._event(pod, "Warning", "FailedScheduling", message)

    async def _event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        await self.events.event({"apiVersion": "v1", "kind": "Pod", **pod}, kind, reason,
                                message, action="Scheduling")

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SWEEP)
            for key in list(self.unschedulable):
                self.queue.add(key)

    async def run(self) -> None:
        sweeper = asyncio.create_task(self._sweep())
        try:
            while True:
                try:
                    key = await self.queue.get()
                except ShutDown:
                    return
                try:
                    await self._schedule(key)
                except Exception:
                    log.exception("scheduling %s failed", key)
                    self.queue.add_rate_limited(key)
                finally:
                    self.queue.done(key)
        finally:
            self.queue.shutdown()
            sweeper.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(sweeper, *self._tasks, return_exceptions=True)

