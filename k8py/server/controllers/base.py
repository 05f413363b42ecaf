"""What every controller is made of: informers that enqueue keys, a work queue, workers that
reconcile one key at a time, and expectations.

A controller subclasses `Controller`, sets `name`, and in `setup()` takes informers from
`self.informers` (shared with every other controller) and registers handlers that call
`self.enqueue(key)`. `reconcile(key)` compares desired with observed state for one object and
acts through `self.client`; it may return seconds after which to look again. A reconcile that
raises is retried with backoff (a Conflict is expected and not logged).

`Expectations` (client-go's ControllerExpectations) stop a controller from acting twice on a
stale cache: after creating 5 pods it expects to see 5 ADDs, and until it has (or a timeout
passes) it does not count pods again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from k8py.api import errors
from k8py.client.events import EventRecorder
from k8py.client.client import Client
from k8py.client.informer import Informer, SharedInformers, key_of
from k8py.client.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Settings:
    """Tunables of the controllers (flags of `k8py server`)."""
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask: int = 24
    service_cidr: str = "10.43.0.0/16"
    node_port_range: tuple[int, int] = (30000, 32767)
    node_monitor_grace: float = 40.0        # missed heartbeats before Ready=Unknown
    pod_eviction_timeout: float = 300.0     # default tolerationSeconds for not-ready nodes
    terminated_pod_gc_threshold: int = 12500
    ca_bundle: str = ""                     # the cluster CA (PEM), published to namespaces
    ca_cert_file: str = ""                  # the cluster CA's certificate and key files,
    ca_key_file: str = ""                   # for signing approved CSRs (none: not signed)
    storage_dir: str = "/var/lib/k8py/storage"  # local-path volumes' directories on nodes
    # the HorizontalPodAutoscaler controller's (upstream's --horizontal-pod-autoscaler-* flags)
    hpa_sync_period: float = 15.0
    hpa_tolerance: float = 0.1
    hpa_downscale_stabilization: float = 300.0
    hpa_cpu_initialization_period: float = 300.0
    hpa_initial_readiness_delay: float = 30.0
    # where it reads pod metrics: a factory of the controller's client (None: the
    # metrics.k8s.io API; `replicacalculator.PodMetricsSource`)
    hpa_metrics_source: Callable[[Client], Any] | None = None


@dataclasses.dataclass
class Context:
    client: Client
    informers: SharedInformers
    settings: Settings = dataclasses.field(default_factory=Settings)
    # a client acting as the service account `kube-system/<name>` (upstream's
    # --use-service-account-credentials); None: every controller uses `client`
    client_for: Callable[[str], Client] | None = None


class Expectations:
    TIMEOUT = 30.0

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, int, float]] = {}  # key -> adds, deletes, since

    def expect(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        old_adds, old_deletes, _ = self._pending.get(key, (0, 0, 0.0))
        self._pending[key] = (old_adds + adds, old_deletes + deletes, time.monotonic())

    def observed_add(self, key: str) -> None:
        self._lower(key, 1, 0)

    def observed_delete(self, key: str) -> None:
        self._lower(key, 0, 1)

    def _lower(self, key: str, adds: int, deletes: int) -> None:
        entry = self._pending.get(key)
        if entry is not None:
            self._pending[key] = (entry[0] - adds, entry[1] - deletes, entry[2])

    def satisfied(self, key: str) -> bool:
        entry = self._pending.get(key)
        if entry is None:
            return True
        adds, deletes, since = entry
        if (adds <= 0 and deletes <= 0) or time.monotonic() - since > self.TIMEOUT:
            del self._pending[key]
            return True
        return False

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)


class Controller:
    name = "controller"
    # the event source, as upstream's (`replicaset-controller`, `deployment-controller`, ...)
    component = ""
    # the service account in kube-system this controller acts as (upstream's, bound to
    # `system:controller:<account>`); its informers read as the controller manager
    service_account = ""
    workers = 2

    def __init__(self, context: Context):
        self.context = context
        self.client = context.client_for(self.service_account) \
            if context.client_for is not None and self.service_account else context.client
        self.events = EventRecorder(self.client, self.component or f"{self.name}-controller")
        self.informers = context.informers
        self.settings = context.settings
        self.queue = WorkQueue()
        self.setup()

    async def record(self, resource, obj: dict[str, Any], kind: str, reason: str,
                     message: str) -> None:
        """An Event about obj, a `resource` object (from a cache: not modified)."""
        await self.events.event({"apiVersion": resource.api_version, "kind": resource.kind,
                                 **obj}, kind, reason, message)

    def setup(self) -> None:
        """Take informers and register handlers."""

    def informer(self, resource, **kwargs) -> Informer:
        return self.informers.informer(resource, **kwargs)

    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)

    def enqueue_object(self, obj: dict[str, Any]) -> None:
        self.queue.add(key_of(obj))

    def enqueue_owner(self, obj: dict[str, Any], owner_kind: str) -> str | None:
        """Queue the controller owner of `obj` if it is of `owner_kind`; its key."""
        owner = controller_of(obj)
        if owner is None or owner.get("kind") != owner_kind:
            return None
        namespace = obj["metadata"].get("namespace")
        key = f"{namespace}/{owner['name']}" if namespace else owner["name"]
        self.queue.add(key)
        return key

    async def reconcile(self, key: Any) -> float | None:
        raise NotImplementedError

    async def started(self) -> None:
        """Called once the informers have synced, before the workers start."""

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                after = await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except (errors.Conflict, errors.AlreadyExists):
                self.queue.add_rate_limited(key)
            except errors.StatusError as exc:
                level = logging.DEBUG if self.queue.failures(key) < 3 else logging.WARNING
                log.log(level, "%s: %s: %s", self.name, key, exc.message)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: reconciling %s failed", self.name, key)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
                if after is not None:
                    self.queue.add_after(key, after)
            finally:
                self.queue.done(key)

    async def run(self) -> None:
        await self.started()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: dict[str, Any], block: bool = True) -> dict[str, Any]:
    """A controller ownerReference pointing at `owner`."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": block}


def is_active_pod(pod: dict[str, Any]) -> bool:
    """Counted by workload controllers: not finished and not being deleted."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
        not pod["metadata"].get("deletionTimestamp")


def is_pod_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False
