"""The controllers in one place, sharing one set of informers (one watch and one cache per
resource, however many controllers read it); and the scheduler, on informers of its own.

They run only while this server holds their Lease in `kube-system` (`kube-controller-manager`
for the controllers, `kube-scheduler` for the scheduler, elected separately as upstream's two
processes are), so several servers sharing a store never run two sets of loops at once.
Losing a lease cancels that component's loops and informers at once; its election starts
again. Each term starts from fresh informers and controllers (nothing from a previous term's
cache is trusted). On shutdown the leases held are released, so another server takes over
within a retry period instead of a lease duration.

`CONTROLLERS` lists the controller classes in the order they start. `--disable` style
selection is by their `name`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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


async def run_loops(client: Client, settings: Settings | None = None,
                    only: Iterable[str] | None = None,
                    client_for: Callable[[str], Client] | None = None) -> None:
    """Start the informers, wait for their first lists, then run every controller."""
    informers, controllers = build(client, settings, only, client_for)
    informers.start()
    try:
        await informers.wait_synced()
        log.info("informers synced; starting %d controllers", len(controllers))
        await asyncio.gather(*(c.run() for c in controllers))
    finally:
        await informers.stop()


# the scheduler, as its client and a function of its informers that returns its loop
Scheduling = tuple[Client, Callable[[SharedInformers], Callable[[], Awaitable[None]]]]


async def run_scheduler(scheduling: Scheduling) -> None:
    """The scheduler on informers of its own (read as the scheduler), once they synced."""
    client, make = scheduling
    informers = SharedInformers(client)
    loop = make(informers)
    informers.start()
    try:
        await informers.wait_synced()
        log.info("informers synced; starting the scheduler")
        await loop()
    finally:
        await informers.stop()


def identity(host: str | None = None) -> str:
    """A candidate's holderIdentity, as upstream's components build it (`<hostname>_<uuid>`);
    `host`: the server's node name instead of the hostname (several servers on one host, as
    in `k8py lab`, tell which of them leads)."""
    return f"{host or socket.gethostname()}_{uuid.uuid4()}"


Lead = Callable[[], Awaitable[None]]


def elections(client: Client, settings: Settings | None = None,
              only: Iterable[str] | None = None, scheduling: Scheduling | None = None,
              client_for: Callable[[str], Client] | None = None, host: str | None = None,
              **election: Any) -> list[tuple[LeaderElector, Lead]]:
    """The candidates of this server and what each runs while leading: the controllers on
    `kube-system/kube-controller-manager` (none when `only` is empty), the scheduler on
    `kube-system/kube-scheduler`, each lease taken by its own component's client.
    `election` goes to each `LeaderElector` (timings, release_on_cancel)."""
    only = list(only) if only is not None else None
    found: list[tuple[LeaderElector, Lead]] = []
    if only is None or only:
        found.append((LeaderElector(client, "kube-system", "kube-controller-manager",
                                    identity(host), **election),
                      lambda: run_loops(client, settings, only, client_for)))
    if scheduling is not None:
        found.append((LeaderElector(scheduling[0], "kube-system", "kube-scheduler",
                                    identity(host), **election),
                      lambda: run_scheduler(scheduling)))
    return found


async def run(candidates: list[tuple[LeaderElector, Lead]]) -> None:
    """Every candidate's elections, forever; cancelling releases the leases held."""
    tasks = [asyncio.create_task(elector.lead_forever(lead)) for elector, lead in candidates]
    try:
        await asyncio.gather(*tasks)
    finally:  # one failed or we are cancelled: the others stop (and release) too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_elected(client: Client, settings: Settings | None = None,
                      only: Iterable[str] | None = None,
                      scheduling: Scheduling | None = None,
                      client_for: Callable[[str], Client] | None = None,
                      host: str | None = None) -> None:
    """This server's controllers and scheduler, each while elected; forever."""
    await run(elections(client, settings, only, scheduling, client_for, host))
