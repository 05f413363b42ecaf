"""What a pod worker should do next: a pure function of the pod's spec and what was observed
(upstream's `computePodActions`, pkg/kubelet/kuberuntime/kuberuntime_manager.go).

The worker (`pods.PodWorker`) observes the runtime and its own bookkeeping into a
`PodState` — per container name, its instances newest first (with their state, exit code,
whether its probes are being watched and whether a liveness or startup probe wants it
killed), the waiting reason the worker recorded, and how long each back-off has left — then
`plan_containers` answers with a `Plan`: the actions, in order, and when to look again. The
worker carries the actions out over the CRI (`pods.PodWorker._execute`). Nothing here reads
a clock or calls anything: every decision is table-tested (tests/unit/agent/test_planner.py).

The rules, upstream's:
- init containers run one at a time, in order; the regular containers start only once every
  init container has succeeded. A failed init container is restarted (with back-off) unless
  the pod's restartPolicy is Never, which fails the pod;
- a regular container that exited is restarted as restartPolicy says (Always: always;
  OnFailure: after a non-zero exit; Never: never), under CrashLoopBackOff: the first restart
  at once, then after the back-off the worker's `Backoff` keeps;
- a running container whose liveness or startup probe failed is killed (and then restarted
  as above); a running container nobody watches (the agent restarted) gets its probes;
- a container created but never started (the agent died in between) is removed and started
  over, with the same attempt number;
- a container whose start failed (config, create or run error) is retried after its start
  back-off;
- an ephemeral container runs once, never restarted, after the init containers; with a
  targetContainerName it waits until that container runs, to join its PID namespace.

`plan_sandbox` decides the step before: tear down a pod being deleted, stop the sandbox of a
pod that finished, wait for the pod network, start a sandbox, or go on to the containers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

CREATED, RUNNING, EXITED, UNKNOWN = "created", "running", "exited", "unknown"
START_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
CRASH_LOOP = "CrashLoopBackOff"


class ContainerStartError(Exception):
    """A container could not be started; `reason` is the waiting reason it reports
    (ErrImagePull, CreateContainerConfigError, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- what was observed -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Instance:
    """One run of a container, as the runtime holds it."""
    id: str
    state: str | None  # CREATED, RUNNING, EXITED, UNKNOWN; None: its status could not be read
    attempt: int = 0
    exit_code: int = 0
    probed: bool = True  # its probes are being watched (false for an adopted container)
    probe_kill: str = ""  # why its liveness or startup probe wants it killed; "" if not


@dataclasses.dataclass(frozen=True)
class Seen:
    """One container name: its instances (newest first) and the worker's bookkeeping."""
    instances: tuple[Instance, ...] = ()
    waiting: str = ""  # the waiting reason the worker recorded (a start error, CrashLoop)
    start_backoff: float = 0.0  # seconds before a failed start may be tried again
    restart_backoff: float = 0.0  # seconds of CrashLoopBackOff left for the exited instance


@dataclasses.dataclass(frozen=True)
class PodState:
    containers: Mapping[str, Seen]

    def seen(self, name: str) -> Seen:
        return self.containers.get(name) or Seen()


# --- what to do --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Start:
    """Create and start a run of container `name`; `older` are earlier instances (the
    newest of them is kept for `logs --previous`, the rest removed); `restart` counts it
    against the container's back-off; `target` is the container id whose PID namespace an
    ephemeral container joins."""
    name: str
    attempt: int
    older: tuple[str, ...] = ()
    restart: bool = False
    target: str = ""
    ephemeral: bool = False


@dataclasses.dataclass(frozen=True)
class Kill:
    name: str
    id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Remove:
    """Remove an instance that was created but never started."""
    id: str


@dataclasses.dataclass(frozen=True)
class WatchProbes:
    """Start watching the probes of a running container the worker did not start."""
    name: str
    id: str


@dataclasses.dataclass(frozen=True)
class StopProbes:
    id: str


@dataclasses.dataclass(frozen=True)
class CrashLoop:
    """The container waits in CrashLoopBackOff (reported, with a BackOff event the first
    time)."""
    name: str


@dataclasses.dataclass(frozen=True)
class Settle:
    """The container stays as it ended: no waiting reason any more."""
    name: str


Action = Start | Kill | Remove | WatchProbes | StopProbes | CrashLoop | Settle


@dataclasses.dataclass
class Plan:
    actions: list[Action] = dataclasses.field(default_factory=list)
    requeue: float | None = None  # look again after this many seconds (None: on a change)

    def after(self, seconds: float) -> None:
        if self.requeue is None or seconds < self.requeue:
            self.requeue = seconds

    @property
    def acts(self) -> bool:
        """Whether carrying it out changes the runtime (so it is worth observing again)."""
        return any(isinstance(a, (Start, Kill, Remove)) for a in self.actions)


# --- deciding ----------------------------------------------------------------------------------

def restart_wanted(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def plan_containers(spec: Mapping[str, Any], state: PodState) -> Plan:
    """The actions that move the pod's containers toward its spec."""
    plan = Plan()
    policy = spec.get("restartPolicy", "Always")
    for container in spec.get("initContainers") or []:
        outcome = _container(plan, container["name"], state.seen(container["name"]), policy,
                             init=True)
        if outcome != "done":
            return plan
    for container in spec.get("containers") or []:
        _container(plan, container["name"], state.seen(container["name"]), policy,
                   init=False)
    for container in spec.get("ephemeralContainers") or []:
        _ephemeral(plan, container, state)
    return plan


def _container(plan: Plan, name: str, seen: Seen, policy: str, init: bool) -> str:
    """Plan one init or regular container: "done" (an init container that succeeded),
    "acted" or "wait"."""
    current = seen.instances[0] if seen.instances else None
    if current is None:
        return _first_start(plan, name, seen)
    if current.state is None:
        return "wait"
    if current.state == RUNNING:
        if not current.probed:
            plan.actions.append(WatchProbes(name, current.id))
        elif current.probe_kill:
            plan.actions.append(Kill(name, current.id, current.probe_kill))
            return "acted"
        return "wait"
    if current.state == CREATED:
        plan.actions.append(Remove(current.id))
        plan.actions.append(Start(name, current.attempt, _ids(seen.instances[1:])))
        return "acted"
    if current.state != EXITED:
        return "wait"
    plan.actions.append(StopProbes(current.id))
    if init and current.exit_code == 0:
        return "done"
    if init and policy == "Never":
        return "wait"  # the pod has failed
    if not restart_wanted("OnFailure" if init else policy, current.exit_code):
        plan.actions.append(Settle(name))
        return "wait"
    if seen.restart_backoff > 0:
        plan.actions.append(CrashLoop(name))
        plan.after(seen.restart_backoff)
        return "wait"
    plan.actions.append(Start(name, current.attempt + 1, _ids(seen.instances), restart=True))
    return "acted"


def _first_start(plan: Plan, name: str, seen: Seen, target: str = "",
                 ephemeral: bool = False) -> str:
    if seen.waiting in START_ERRORS and seen.start_backoff > 0:
        plan.after(seen.start_backoff)
        return "wait"
    plan.actions.append(Start(name, 0, target=target, ephemeral=ephemeral))
    return "acted"


def _ephemeral(plan: Plan, container: Mapping[str, Any], state: PodState) -> str:
    name = container["name"]
    seen = state.seen(name)
    if seen.instances:
        return "wait"  # ran (or runs) once; never again
    target_id = ""
    target = container.get("targetContainerName")
    if target:
        running = [i for i in state.seen(target).instances if i.state == RUNNING]
        if not running:
            plan.after(1.0)
            return "wait"
        target_id = running[0].id
    return _first_start(plan, name, seen, target_id, ephemeral=True)


def _ids(instances: Sequence[Instance]) -> tuple[str, ...]:
    return tuple(i.id for i in instances)


# --- the sandbox ------------------------------------------------------------------------------

TERMINATE, STOP_SANDBOX, WAIT_FOR_NETWORK, START_SANDBOX, CONTAINERS = (
    "terminate", "stop-sandbox", "wait-for-network", "start-sandbox", "containers")


def plan_sandbox(*, deleting: bool, phase: str | None, sandbox_ready: bool,
                 host_network: bool, network_ready: bool) -> str:
    """The step before the containers: TERMINATE a pod being deleted (or gone), STOP_SANDBOX
    of a finished pod (it keeps its object and logs), WAIT_FOR_NETWORK (no CNI config yet:
    the node has no podCIDR), START_SANDBOX, or go on with CONTAINERS."""
    if deleting:
        return TERMINATE
    if phase in ("Succeeded", "Failed"):
        return STOP_SANDBOX
    if sandbox_ready:
        return CONTAINERS
    if not host_network and not network_ready:
        return WAIT_FOR_NETWORK
    return START_SANDBOX
