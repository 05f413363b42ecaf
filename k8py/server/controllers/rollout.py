"""Deployment rollout arithmetic, free of I/O (upstream pkg/controller/deployment/util):
maxSurge/maxUnavailable from ints or percentages, revisions and the annotations that carry
them, the pod-template hash and template equality, proportional scaling, and the status and
conditions computed from a deployment's ReplicaSets.

Objects are API JSON dicts. Functions that change a set or a status say so by name
(`set_...`, `remove_...`) and change only what they are given; the rest only read.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from k8py.api import timestamps
from k8py.api.jsondoc import clone

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
NOT_COPIED = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                        MAX_REPLICAS, ROLLBACK_TO})
MAX_HISTORY_CHARS = 2000
NO_DEADLINE = 2 ** 31 - 1

# Condition reasons (upstream deploymentutil).
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def replicas(obj: dict[str, Any] | None) -> int:
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else value


def status_count(obj: dict[str, Any] | None, field: str) -> int:
    return ((obj or {}).get("status") or {}).get(field) or 0


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """An int-or-percent against `total` (intstr.GetScaledValueFromIntOrPercent)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        scaled = float(int(value[:-1])) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def fenceposts(deployment: dict[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) of a rolling deployment; never both 0."""
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    desired = replicas(deployment)
    surge = scaled_value(rolling.get("maxSurge", 0), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", 0), desired, False)
    if surge == 0 and unavailable == 0:
        # Rounding down can make maxUnavailable 0: guess that surging lets us scale down.
        unavailable = 1
    return surge, unavailable


def max_surge(deployment: dict[str, Any]) -> int:
    return fenceposts(deployment)[0]


def max_unavailable(deployment: dict[str, Any]) -> int:
    desired = replicas(deployment)
    if desired == 0:
        return 0
    return min(fenceposts(deployment)[1], desired)


def is_rolling(deployment: dict[str, Any]) -> bool:
    return ((deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate")
            == "RollingUpdate")


def revision(rs: dict[str, Any]) -> int | None:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return None


def max_revision(sets: list[dict[str, Any]]) -> int:
    return max((revision(rs) or 0 for rs in sets), default=0)


def int_annotation(rs: dict[str, Any], name: str) -> int | None:
    try:
        return int((rs["metadata"].get("annotations") or {})[name])
    except (KeyError, ValueError):
        return None


def _without_empty(value: Any) -> Any:
    """Empty maps and lists, and nulls, dropped: Go decodes them and absence alike (an
    empty `resources: {}` from one client equals none from another)."""
    if isinstance(value, dict):
        cleaned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def _template_identity(template: dict[str, Any]) -> dict[str, Any]:
    """The template as compared and hashed: no hash label, empty values as absent."""
    template = clone(template or {})
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return _without_empty(template)


def equal_ignore_hash(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _template_identity(a) == _template_identity(b)


def template_hash(template: dict[str, Any], collision_count: int | None) -> str:
    """FNV-32a of the template (and the collision count), in upstream's safe alphabet."""
    data = json.dumps(_template_identity(template), sort_keys=True,
                      separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in str(value))


def created_order(rs: dict[str, Any]) -> tuple[float, str]:
    return (timestamps.parse(rs["metadata"].get("creationTimestamp")) or 0.0,
            rs["metadata"]["name"])


def active(sets: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [rs for rs in sets if rs is not None and replicas(rs) > 0]


def has_progress_deadline(deployment: dict[str, Any]) -> bool:
    deadline = deployment["spec"].get("progressDeadlineSeconds")
    return deadline is not None and deadline != NO_DEADLINE


def get_condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == kind:
            return condition
    return None


def new_condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    now = timestamps.now()
    return {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def set_condition(status: dict[str, Any], condition: dict[str, Any]) -> None:
    current = get_condition(status, condition["type"])
    if current is not None and current["status"] == condition["status"] and \
            current.get("reason") == condition["reason"]:
        return
    if current is not None and current["status"] == condition["status"]:
        condition = {**condition, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove_condition(status: dict[str, Any], kind: str) -> None:
    conditions = [c for c in status.get("conditions") or () if c.get("type") != kind]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def deployment_complete(deployment: dict[str, Any], status: dict[str, Any]) -> bool:
    desired = replicas(deployment)
    return (status.get("updatedReplicas", 0) == desired and
            status.get("replicas", 0) == desired and
            status.get("availableReplicas", 0) == desired and
            status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1))


def deployment_progressing(deployment: dict[str, Any], status: dict[str, Any]) -> bool:
    old = deployment.get("status") or {}
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = status.get("replicas", 0) - status.get("updatedReplicas", 0)
    return (status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0) or
            new_old < old_old or
            status.get("readyReplicas", 0) > old.get("readyReplicas", 0) or
            status.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def deployment_timed_out(deployment: dict[str, Any], status: dict[str, Any]) -> bool:
    if not has_progress_deadline(deployment):
        return False
    condition = get_condition(status, "Progressing")
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    since = timestamps.parse(condition.get("lastUpdateTime")) or 0.0
    return since + deployment["spec"]["progressDeadlineSeconds"] < time.time()


def calculate_status(sets: list[dict[str, Any]], new_rs: dict[str, Any] | None,
                     deployment: dict[str, Any]) -> dict[str, Any]:
    """Counts from the sets; conditions carried over, `Available` recomputed. Zero counts are
    left out, as the API's omitempty fields are."""
    old = deployment.get("status") or {}
    available = sum(status_count(rs, "availableReplicas") for rs in sets)
    total = sum(replicas(rs) for rs in sets)
    counts = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": sum(status_count(rs, "replicas") for rs in sets),
        "updatedReplicas": status_count(new_rs, "replicas"),
        "readyReplicas": sum(status_count(rs, "readyReplicas") for rs in sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
    }
    status: dict[str, Any] = {k: v for k, v in counts.items() if v}
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = [dict(c) for c in old["conditions"]]
    if available >= replicas(deployment) - max_unavailable(deployment):
        set_condition(status, new_condition("Available", "True", "MinimumReplicasAvailable",
                                            "Deployment has minimum availability."))
    else:
        set_condition(status, new_condition("Available", "False",
                                            "MinimumReplicasUnavailable",
                                            "Deployment does not have minimum availability."))
    return status


def set_replicas_annotations(rs: dict[str, Any], desired: int, most: int) -> bool:
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for name, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(most))):
        if annotations.get(name) != value:
            annotations[name] = value
            changed = True
    return changed


def set_new_rs_annotations(deployment: dict[str, Any], rs: dict[str, Any], new_revision: int,
                           exists: bool) -> bool:
    """Copy the deployment's annotations, raise the revision (keeping rolled-back-from
    numbers in revision-history), and for a set about to be created, the replica counts."""
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for name, value in (deployment["metadata"].get("annotations") or {}).items():
        if name in NOT_COPIED or annotations.get(name) == value:
            continue
        annotations[name] = value
        changed = True
    had_revision = REVISION in annotations
    try:
        old_revision = int(annotations.get(REVISION) or 0)
    except ValueError:
        return False
    if old_revision < new_revision:
        annotations[REVISION] = str(new_revision)
        changed = True
        if had_revision:
            history = [r for r in annotations.get(REVISION_HISTORY, "").split(",") if r]
            history.append(str(old_revision))
            while len(",".join(history)) > MAX_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            annotations[REVISION_HISTORY] = ",".join(history)
    if not exists:
        desired = replicas(deployment)
        if set_replicas_annotations(rs, desired, desired + max_surge(deployment)):
            changed = True
    return changed


def new_rs_replicas(deployment: dict[str, Any], sets: list[dict[str, Any]],
                    new_rs: dict[str, Any]) -> int:
    """How many replicas the new set may have now (NewRSNewReplicas)."""
    desired = replicas(deployment)
    if not is_rolling(deployment):
        return desired
    current = sum(replicas(rs) for rs in sets)
    most = desired + scaled_value(
        ((deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get(
            "maxSurge", 0), desired, True)
    if current >= most:
        return replicas(new_rs)
    return replicas(new_rs) + min(most - current, desired - replicas(new_rs))


def proportion(rs: dict[str, Any], deployment: dict[str, Any], to_add: int, added: int) -> int:
    """This set's share of a scaling of the whole deployment (GetReplicaSetProportion)."""
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(deployment) == 0:
        fraction = -replicas(rs)
    else:
        most = replicas(deployment) + max_surge(deployment)
        before = int_annotation(rs, MAX_REPLICAS) or status_count(deployment, "replicas")
        fraction = 0 if not before else \
            math.floor(replicas(rs) * most / before + 0.5) - replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)
