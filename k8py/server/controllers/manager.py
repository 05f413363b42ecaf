"""The controllers in one place, sharing one set of informers (one watch and one cache per
resource, however many controllers read it) with the loops that run beside them (the
server daemon puts the scheduler there: `beside`).

They run only while this server holds the `kube-controller-manager` Lease in `kube-system`,
so several servers sharing a store never run two sets of loops at once. Losing the lease
stops them all; the election starts again.

`CONTROLLERS` lists the controller classes in the order they start. `--disable` style
selection is by their `name`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping

from k8py.client.client import Client
from k8py.client.informer import SharedInformers
from k8py.client.leaderelection import LeaderElector
from k8py.server.controllers.base import Context, Controller, Settings
from k8py.server.controllers.clusterroleaggregation import ClusterRoleAggregationController
from k8py.server.controllers.cronjob import CronJobController
from k8py.server.controllers.csrapproving import CsrApprovingController
from k8py.server.controllers.csrsigning import CsrSigningController
from k8py.server.controllers.persistentvolume import PersistentVolumeController
from k8py.server.controllers.nodepasswords import NodePasswordController
from k8py.server.controllers.protection import PvcProtectionController, PvProtectionController
from k8py.server.controllers.servicelb import ServiceLoadBalancer
from k8py.server.controllers.ingressstatus import IngressStatusController
from k8py.server.controllers.daemonset import DaemonSetController
from k8py.server.controllers.deployment import DeploymentController
from k8py.server.controllers.disruption import DisruptionController
from k8py.server.controllers.endpoints import EndpointsController
from k8py.server.controllers.endpointslice import EndpointSliceController
from k8py.server.controllers.garbagecollector import GarbageCollector
from k8py.server.controllers.horizontal import HorizontalPodAutoscalerController
from k8py.server.controllers.job import JobController
from k8py.server.controllers.localpath import LocalPathProvisioner
from k8py.server.controllers.namespace import NamespaceController
from k8py.server.controllers.nodeipam import NodeIpamController
from k8py.server.controllers.nodelifecycle import NodeLifecycleController
from k8py.server.controllers.replicaset import (ReplicaSetController,
                                                ReplicationControllerController)
from k8py.server.controllers.resourcequota import ResourceQuotaController
from k8py.server.controllers.rootca import RootCAPublisher
from k8py.server.controllers.serviceaccount import ServiceAccountController
from k8py.server.controllers.statefulset import StatefulSetController

log = logging.getLogger(__name__)

CONTROLLERS: list[type[Controller]] = [
    ClusterRoleAggregationController,
    NodeIpamController,
    NodeLifecycleController,
    ServiceAccountController,
    RootCAPublisher,
    DeploymentController,
    ReplicaSetController,
    ReplicationControllerController,
    DaemonSetController,
    StatefulSetController,
    JobController,
    CronJobController,
    EndpointsController,
    EndpointSliceController,
    DisruptionController,
    HorizontalPodAutoscalerController,
    GarbageCollector,
    NamespaceController,
    CsrApprovingController,
    CsrSigningController,
    ServiceLoadBalancer,
    IngressStatusController,
    NodePasswordController,
    ResourceQuotaController,
    PersistentVolumeController,
    LocalPathProvisioner,
    PvcProtectionController,
    PvProtectionController,
]


def build(client: Client, settings: Settings | None = None,
          only: Iterable[str] | None = None,
          client_for: Callable[[str], Client] | None = None
          ) -> tuple[SharedInformers, list[Controller]]:
    """The controllers on shared informers read through `client`; each controller acts
    through `client_for(its service account)` when given (upstream's
    --use-service-account-credentials), else through `client`."""
    informers = SharedInformers(client)
    context = Context(client, informers, settings or Settings(), client_for)
    wanted = set(only) if only is not None else None
    controllers = [cls(context) for cls in CONTROLLERS
                   if wanted is None or cls.name in wanted]
    return informers, controllers


# loops that run beside the controllers, on their informers: what each is called in the log
# ("the scheduler") -> a function of the informers that returns the loop
Beside = Mapping[str, Callable[[SharedInformers], Callable[[], Awaitable[None]]]]


async def run_loops(client: Client, settings: Settings | None = None,
                    only: Iterable[str] | None = None, beside: Beside | None = None,
                    client_for: Callable[[str], Client] | None = None) -> None:
    """Start the informers, wait for their first lists, then run every loop."""
    beside = beside or {}
    informers, controllers = build(client, settings, only, client_for)
    loops = [c.run for c in controllers] + [make(informers) for make in beside.values()]
    informers.start()
    try:
        await informers.wait_synced()
        log.info("informers synced; starting %d controllers and %s", len(controllers),
                 " and ".join(beside) or "no scheduler")
        await asyncio.gather(*(loop() for loop in loops))
    finally:
        await informers.stop()


async def run_elected(client: Client, settings: Settings | None = None,
                      only: Iterable[str] | None = None, beside: Beside | None = None,
                      client_for: Callable[[str], Client] | None = None) -> None:
    """`run_loops` while holding the controller-manager lease; forever."""
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    elector = LeaderElector(client, "kube-system", "kube-controller-manager", identity)
    try:
        while True:
            await elector.run(lambda: run_loops(client, settings, only, beside, client_for))
    finally:
        await elector.release()
