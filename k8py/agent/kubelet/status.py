"""A pod's status, computed from what the runtime shows (pure functions, unit tested).

The pod worker observes, for every container of the pod, the newest CRI container (and the
one before it, for `lastState`) and decides what waits (CrashLoopBackOff, ImagePullBackOff,
...). `pod_status` turns that observation into the `status` the API shows, following
upstream's kubelet (`kubelet_pods.go` getPhase, `status/generate.go`):

- phase: Pending while init containers have not all succeeded or a container waits for its
  first start; Running while one runs (or all stopped but will restart); Succeeded/Failed
  when all stopped for good; a failed init container with restartPolicy Never fails the pod;
- conditions PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled,
  whose lastTransitionTime only moves when their status does;
- containerStatuses and initContainerStatuses (state, lastState, ready, started,
  restartCount, image, imageID, containerID), qosClass, podIP(s), hostIP(s), startTime.

`changed(old, new)` says whether a write is needed: a status patch only when something moved.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from k8py.api.qos import pod_qos_class

CRI_RUNNING, CRI_EXITED, CRI_CREATED = 1, 2, 0
RUNTIME_SCHEME = "containerd://"


def rfc3339(nanoseconds: int) -> str | None:
    if not nanoseconds:
        return None
    moment = datetime.datetime.fromtimestamp(nanoseconds / 1e9, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Observed:
    """One CRI container as the status needs it (from a cri_pb2.ContainerStatus)."""
    id: str
    state: int  # CRI ContainerState: 0 created, 1 running, 2 exited, 3 unknown
    attempt: int = 0
    created_at: int = 0  # nanoseconds
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image: str = ""
    image_ref: str = ""

    @classmethod
    def from_cri(cls, status: Any) -> "Observed":
        return cls(id=status.id, state=status.state, attempt=status.metadata.attempt,
                   created_at=status.created_at, started_at=status.started_at,
                   finished_at=status.finished_at, exit_code=status.exit_code,
                   reason=status.reason, message=status.message, image=status.image.image,
                   image_ref=status.image_ref)

    def terminated(self) -> dict[str, Any]:
        reason = self.reason or ("Completed" if self.exit_code == 0 else "Error")
        body = {"exitCode": self.exit_code, "reason": reason,
                "startedAt": rfc3339(self.started_at),
                "finishedAt": rfc3339(self.finished_at),
                "containerID": RUNTIME_SCHEME + self.id}
        if self.message:
            body["message"] = self.message
        return body


@dataclasses.dataclass
class ContainerView:
    """What the worker knows of one container of the pod spec."""
    current: Observed | None = None
    previous: Observed | None = None  # the one before current, for lastState
    waiting: tuple[str, str] | None = None  # (reason, message) overriding the state
    show_previous_as_last: bool = True
    ready: bool = False
    started: bool = False  # startup probe passed (or none) and running


@dataclasses.dataclass
class PodView:
    sandbox_ready: bool = False
    pod_ip: str = ""
    host_ip: str = ""
    start_time: str | None = None
    containers: dict[str, ContainerView] = dataclasses.field(default_factory=dict)
    terminal: bool = False  # the pod will not run again (its phase is final)


def container_status(spec: dict[str, Any], view: ContainerView) -> dict[str, Any]:
    current, previous = view.current, view.previous
    status: dict[str, Any] = {"name": spec["name"], "image": spec.get("image", ""),
                              "imageID": "", "ready": False,
                              "restartCount": current.attempt if current else 0,
                              "started": False, "state": {}, "lastState": {}}
    if current is not None:
        status["containerID"] = RUNTIME_SCHEME + current.id
        status["imageID"] = current.image_ref
    if view.waiting is not None:
        reason, message = view.waiting
        status["state"] = {"waiting": {"reason": reason, **({"message": message}
                                                           if message else {})}}
        if current is not None and current.state == CRI_EXITED:
            status["lastState"] = {"terminated": current.terminated()}
        elif previous is not None:
            status["lastState"] = {"terminated": previous.terminated()}
        return status
    if current is None or current.state == CRI_CREATED:
        status["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif current.state == CRI_RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(current.started_at)}}
        status["ready"] = view.ready
        status["started"] = view.started
    else:
        status["state"] = {"terminated": current.terminated()}
    if previous is not None:
        status["lastState"] = {"terminated": previous.terminated()}
    return status


def _is_stopped(status: dict[str, Any]) -> bool:
    return "terminated" in status["state"]


def _succeeded(status: dict[str, Any]) -> bool:
    return status["state"].get("terminated", {}).get("exitCode") == 0


def pod_phase(spec: dict[str, Any], init: list[dict[str, Any]],
              regular: list[dict[str, Any]], terminal: bool = False) -> str:
    """Upstream's getPhase, for regular (non-sidecar) init containers."""
    policy = spec.get("restartPolicy", "Always")
    pending_init = 0
    for status in init:
        if _succeeded(status):
            continue
        last = status["lastState"].get("terminated")
        failed = _is_stopped(status) or (last is not None and last.get("exitCode") != 0
                                         and "waiting" in status["state"])
        if failed and policy == "Never":
            return "Failed"
        pending_init += 1
    running = waiting = stopped = succeeded = 0
    for status in regular:
        state = status["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif status["lastState"].get("terminated"):
            stopped += 1
            succeeded += status["lastState"]["terminated"].get("exitCode") == 0
        else:
            waiting += 1
    if pending_init > 0 or waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def pod_status(pod: dict[str, Any], view: PodView, now: str) -> dict[str, Any]:
    spec = pod["spec"]
    old = pod.get("status") or {}
    init_specs = spec.get("initContainers") or []
    specs = spec.get("containers") or []
    init = [container_status(c, view.containers.get(c["name"], ContainerView()))
            for c in init_specs]
    regular = [container_status(c, view.containers.get(c["name"], ContainerView()))
               for c in specs]
    phase = pod_phase(spec, init, regular, view.terminal)
    initialized = all(_succeeded(s) for s in init)
    unready = [s["name"] for s in regular if not s["ready"]]
    conditions = [_condition("PodReadyToStartContainers", view.sandbox_ready)]
    if initialized:
        conditions.append(_condition("Initialized", True))
    else:
        pending = [s["name"] for s in init if not _succeeded(s)]
        conditions.append(_condition("Initialized", False, "ContainersNotInitialized",
                                     f"containers with incomplete status: "
                                     f"[{' '.join(pending)}]"))
    if phase in ("Succeeded", "Failed"):
        conditions.append(_condition("ContainersReady", False, "PodCompleted"))
        conditions.append(_condition("Ready", False, "PodCompleted"))
    elif unready or not initialized:
        message = f"containers with unready status: [{' '.join(unready)}]"
        conditions.append(_condition("ContainersReady", False, "ContainersNotReady", message))
        conditions.append(_condition("Ready", False, "ContainersNotReady", message))
    else:
        conditions.append(_condition("ContainersReady", True))
        gates = [g.get("conditionType") for g in spec.get("readinessGates") or []]
        existing = {c.get("type"): c.get("status") for c in old.get("conditions") or []}
        missing = [g for g in gates if existing.get(g) != "True"]
        if missing:
            conditions.append(_condition(
                "Ready", False, "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate \"{missing[0]}\" does not "
                "exist." if missing[0] not in existing else
                f"the status of pod readiness gate \"{missing[0]}\" is not \"True\", but "
                f"{existing[missing[0]]}"))
        else:
            conditions.append(_condition("Ready", True))
    conditions.append(_condition("PodScheduled", True))
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    ours = {c["type"] for c in conditions}
    for condition in conditions:
        before = previous.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        condition["lastTransitionTime"] = (before.get("lastTransitionTime") if same
                                           else None) or now
    # conditions others own (readiness gates, DisruptionTarget) are kept
    conditions += [c for c in old.get("conditions") or [] if c.get("type") not in ours]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions,
                              "qosClass": old.get("qosClass") or pod_qos_class(spec),
                              "startTime": old.get("startTime") or view.start_time or now}
    if view.host_ip:
        status["hostIP"] = view.host_ip
        status["hostIPs"] = [{"ip": view.host_ip}]
    pod_ip = view.pod_ip or old.get("podIP")
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = init
    status["containerStatuses"] = regular
    # debug containers: reported, but they count for neither the phase nor readiness
    ephemeral = [container_status(c, view.containers.get(c["name"], ContainerView()))
                 for c in spec.get("ephemeralContainers") or []]
    if ephemeral:
        for item in ephemeral:
            item["ready"] = False
        status["ephemeralContainerStatuses"] = ephemeral
    return status


def changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether `new` differs from the stored status in a field we own."""
    old = old or {}
    return any(old.get(key) != value for key, value in new.items())
