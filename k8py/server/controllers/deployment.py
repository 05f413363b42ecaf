"""Deployments: roll a pod template out through ReplicaSets (upstream pkg/controller/deployment).

A Deployment owns ReplicaSets (controller ownerReference); the one whose template equals the
Deployment's, ignoring the `pod-template-hash` label, is the *new* one, every other is *old*.
A new ReplicaSet is named `<deployment>-<hash>`, the hash being FNV-32a of the template (and
`status.collisionCount`), and carries the hash as a label on itself, in its selector and in
its pod template, so the pods of each revision are told apart. This controller only creates,
scales and deletes ReplicaSets; the ReplicaSet controller makes the pods.

Per reconcile, as upstream's syncDeployment:
- claim ReplicaSets: adopt orphans the selector picks, release owned ones it no longer picks;
- paused, or a scaling event (an active set's `desired-replicas` annotation differs from
  `spec.replicas`): only *scale*: one active set takes all replicas; otherwise, in a rolling
  update, spread the change over the active sets in proportion to their size;
- RollingUpdate: scale the new set up to `replicas + maxSurge` pods in all, then scale old
  sets down while `replicas - maxUnavailable` pods stay available (surge rounds up,
  unavailability down; both 0 means maxUnavailable 1); old sets' unavailable pods go first;
- Recreate: scale old sets to 0, wait until none of their pods is left, then create and
  scale up the new one;
- once the rollout is complete, delete old sets with no pods beyond `revisionHistoryLimit`.

Revisions: every set has `deployment.kubernetes.io/revision`; a new template gets the highest
old revision + 1, and so does an old set whose template comes back (a rollback), keeping its
former numbers in `revision-history`. The Deployment carries its new set's revision. Sets also
get `desired-replicas` / `max-replicas` (replicas, replicas + maxSurge) and a copy of the
Deployment's annotations (change-cause among them). `kubectl rollout undo/history` read these.

Status: replicas, updated/ready/available/unavailable counts from the sets, observedGeneration,
collisionCount, and conditions `Available` (at least replicas - maxUnavailable available) and
`Progressing` (set created/found/updated, complete, paused/resumed, or
ProgressDeadlineExceeded when no progress was seen for `progressDeadlineSeconds`; a stuck
rollout is looked at again when its deadline passes).

The arithmetic (fenceposts, revisions, hashing, proportions, status and conditions) is in
`rollout.py`; this module reads the caches and writes.

Writes are made against the cached resourceVersion, so a stale cache yields a Conflict and a
retry rather than a decision taken twice. Counting an old set's available pods, this
controller takes at most its `spec.replicas`: a set just scaled down may still report the
pods it is about to delete.
"""

from __future__ import annotations

import time
from typing import Any

from k8py.api import errors, selectors, timestamps
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid
from k8py.server.controllers.base import Controller, controller_of, owner_reference
from k8py.server.controllers.rollout import (
    DESIRED_REPLICAS, FAILED_RS_CREATE, FOUND_NEW_RS, HASH_LABEL, MAX_REPLICAS, NEW_RS_AVAILABLE,
    NEW_RS_CREATED, PAUSED, RESUMED, REVISION, RS_UPDATED, TIMED_OUT, active, calculate_status,
    created_order, deployment_complete, deployment_progressing, deployment_timed_out,
    equal_ignore_hash, get_condition, has_progress_deadline, int_annotation, is_rolling,
    max_revision, max_surge, max_unavailable, new_condition, new_rs_replicas, proportion,
    remove_condition, replicas, revision, set_condition, set_new_rs_annotations,
    set_replicas_annotations, status_count, template_hash)

DEPLOYMENTS = builtin("apps/v1", "deployments")
REPLICASETS = builtin("apps/v1", "replicasets")
PODS = builtin("v1", "pods")


def _owner_reference(d: dict[str, Any]) -> dict[str, Any]:
    return owner_reference({**d, "apiVersion": "apps/v1", "kind": "Deployment"})


# --- the controller ---------------------------------------------------------------------------

class DeploymentController(Controller):
    name = "deployment"
    service_account = "deployment-controller"
    workers = 4

    def setup(self) -> None:
        self.deployments = self.informer(DEPLOYMENTS)
        self.deployments.add_handlers(self.enqueue_object,
                                      lambda old, new: self.enqueue_object(new),
                                      self.enqueue_object)
        self.sets = self.informer(REPLICASETS)
        self.sets.add_handlers(self._set_changed, self._set_updated, self._set_changed)
        self.pods = self.informer(PODS)
        self.pods.add_index("owner", by_owner_uid)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    # --- handlers -----------------------------------------------------------------------------

    def _set_changed(self, rs: dict[str, Any]) -> None:
        if self.enqueue_owner(rs, "Deployment") is None:
            self._enqueue_selecting(rs)

    def _set_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if self.enqueue_owner(new, "Deployment") is None and \
                old["metadata"].get("labels") != new["metadata"].get("labels"):
            self._enqueue_selecting(new)
        if controller_of(old) != controller_of(new):
            self.enqueue_owner(old, "Deployment")

    def _enqueue_selecting(self, rs: dict[str, Any]) -> None:
        """An orphan set: queue the deployments that would adopt it."""
        if controller_of(rs) is not None:
            return
        labels = rs["metadata"].get("labels") or {}
        for deployment in self.deployments.list(rs["metadata"]["namespace"]):
            selector = deployment["spec"].get("selector") or {}
            if selector and selectors.selector_matches(selector, labels):
                self.enqueue_object(deployment)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        """A Recreate rollout waits for the old pods to be gone."""
        owner = controller_of(pod)
        if owner is None or owner.get("kind") != "ReplicaSet":
            return
        rs = self.sets.get_by_name(pod["metadata"]["namespace"], owner["name"])
        if rs is not None:
            self.enqueue_owner(rs, "Deployment")

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        cached = self.deployments.get(key)
        if cached is None:
            return None
        d = clone(cached)
        d.setdefault("status", {})
        if not d["spec"].get("selector"):
            if d["status"].get("observedGeneration", 0) < d["metadata"].get("generation", 1):
                d["status"]["observedGeneration"] = d["metadata"].get("generation", 1)
                await self.client.update_status(DEPLOYMENTS, d)
            return None
        sets = await self._claim(d)
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_sets = await self._sets_and_revision(d, sets, create=False)
            await self._sync_status(d, [*old_sets, new_rs], new_rs)
            return None
        await self._check_paused(d)
        if d["spec"].get("paused") or await self._is_scaling_event(d, sets):
            return await self._sync(d, sets)
        if is_rolling(d):
            return await self._rollout_rolling(d, sets)
        return await self._rollout_recreate(d, sets)

    async def _claim(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        """The sets this deployment controls, adopting and releasing by its selector
        (ControllerRefManager). Copies: callers may change them."""
        uid = d["metadata"]["uid"]
        selector = d["spec"]["selector"]
        deleting = bool(d["metadata"].get("deletionTimestamp"))
        claimed = []
        for cached in self.sets.list(d["metadata"]["namespace"]):
            rs = clone(cached)
            ref = controller_of(rs)
            matches = selectors.selector_matches(selector, rs["metadata"].get("labels") or {})
            if ref is not None and ref.get("uid") == uid:
                if matches or deleting:
                    claimed.append(rs)
                elif not rs["metadata"].get("deletionTimestamp"):
                    refs = [r for r in rs["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    await self._patch_set(rs, {"ownerReferences": refs})
            elif ref is None and matches and not deleting and \
                    not rs["metadata"].get("deletionTimestamp"):
                refs = [*(rs["metadata"].get("ownerReferences") or []), _owner_reference(d)]
                if await self._patch_set(rs, {"ownerReferences": refs}):
                    claimed.append(rs)
        return claimed

    async def _patch_set(self, rs: dict[str, Any], metadata: dict[str, Any]) -> bool:
        try:
            updated = await self.client.patch(
                REPLICASETS, rs["metadata"]["name"],
                {"metadata": {**metadata, "resourceVersion": rs["metadata"]["resourceVersion"]}},
                rs["metadata"]["namespace"])
        except errors.NotFound:
            return False
        rs.clear()
        rs.update(updated)
        return True

    # --- writes -------------------------------------------------------------------------------

    async def _update_set(self, rs: dict[str, Any]) -> None:
        """Write a changed copy of a set (at its cached resourceVersion); rs becomes the
        server's version."""
        updated = await self.client.update(REPLICASETS, rs)
        rs.clear()
        rs.update(updated)

    async def _write_status(self, d: dict[str, Any]) -> None:
        updated = await self.client.update_status(DEPLOYMENTS, d)
        d.clear()
        d.update(updated)

    async def _set_revision(self, d: dict[str, Any], value: int | str) -> None:
        """The deployment's revision annotation (a metadata write: /status keeps metadata)."""
        if (d["metadata"].get("annotations") or {}).get(REVISION) == str(value):
            return
        # an update, as upstream's controller writes (its role may update, not patch)
        metadata = {**d["metadata"], "annotations": {
            **(d["metadata"].get("annotations") or {}), REVISION: str(value)}}
        updated = await self.client.update(DEPLOYMENTS, {**d, "metadata": metadata})
        d["metadata"] = updated["metadata"]

    async def _scale_set(self, rs: dict[str, Any], count: int, d: dict[str, Any]) -> bool:
        """Scale to count and refresh the replica annotations; whether the size changed."""
        resize = replicas(rs) != count
        desired = replicas(d)
        most = desired + max_surge(d)
        annotations = rs["metadata"].get("annotations") or {}
        if not resize and annotations.get(DESIRED_REPLICAS) == str(desired) and \
                annotations.get(MAX_REPLICAS) == str(most):
            return False
        old_count = replicas(rs)
        rs["spec"]["replicas"] = count
        set_replicas_annotations(rs, desired, most)
        await self._update_set(rs)
        if resize:
            direction = "up" if count > old_count else "down"
            await self.record(DEPLOYMENTS, d, "Normal", "ScalingReplicaSet",
                              f"Scaled {direction} replica set {rs['metadata']['name']} from "
                              f"{old_count} to {count}")
        return resize

    async def _scale_if_needed(self, rs: dict[str, Any], count: int,
                               d: dict[str, Any]) -> bool:
        if replicas(rs) == count:
            return False
        return await self._scale_set(rs, count, d)

    # --- replica sets and revisions ---------------------------------------------------------

    async def _sets_and_revision(self, d: dict[str, Any], sets: list[dict[str, Any]],
                                 create: bool) -> tuple[dict | None, list[dict]]:
        """(new set or None, old sets), syncing revision annotations; the new set is created
        when `create` and missing (getAllReplicaSetsAndSyncRevision)."""
        template = d["spec"].get("template") or {}
        new_rs = next((rs for rs in sorted(sets, key=created_order)
                       if equal_ignore_hash(rs["spec"].get("template") or {}, template)), None)
        old_sets = [rs for rs in sets if rs is not new_rs]
        next_revision = max_revision(old_sets) + 1
        if new_rs is not None:
            changed = set_new_rs_annotations(d, new_rs, next_revision, exists=True)
            if changed or new_rs["spec"].get("minReadySeconds", 0) != \
                    d["spec"].get("minReadySeconds", 0):
                new_rs["spec"]["minReadySeconds"] = d["spec"].get("minReadySeconds", 0)
                await self._update_set(new_rs)
                return new_rs, old_sets
            await self._set_revision(d, new_rs["metadata"]["annotations"][REVISION])
            if has_progress_deadline(d) and get_condition(d["status"], "Progressing") is None:
                set_condition(d["status"], new_condition(
                    "Progressing", "True", FOUND_NEW_RS,
                    f'Found new replica set "{new_rs["metadata"]["name"]}"'))
                await self._write_status(d)
            return new_rs, old_sets
        if not create:
            return None, old_sets
        return await self._create_new_set(d, old_sets, next_revision), old_sets

    async def _create_new_set(self, d: dict[str, Any], old_sets: list[dict[str, Any]],
                              next_revision: int) -> dict[str, Any]:
        template = clone(d["spec"].get("template") or {})
        collisions = d["status"].get("collisionCount")
        pod_hash = template_hash(template, collisions)
        metadata = template.setdefault("metadata", {})
        metadata["labels"] = {**(metadata.get("labels") or {}), HASH_LABEL: pod_hash}
        selector = clone(d["spec"]["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        name = f'{d["metadata"]["name"]}-{pod_hash}'
        namespace = d["metadata"]["namespace"]
        new_rs: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": dict(metadata["labels"]),
                         "ownerReferences": [_owner_reference(d)]},
            "spec": {"replicas": 0, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        new_rs["spec"]["replicas"] = new_rs_replicas(d, [*old_sets, new_rs], new_rs)
        set_new_rs_annotations(d, new_rs, next_revision, exists=False)
        created = True
        try:
            result = await self.client.create(REPLICASETS, new_rs, namespace)
            if new_rs["spec"]["replicas"] > 0:
                await self.record(DEPLOYMENTS, d, "Normal", "ScalingReplicaSet",
                                  f"Scaled up replica set {name} from 0 to "
                                  f"{new_rs['spec']['replicas']}")
        except errors.AlreadyExists:
            # A slow cache, or a hash collision: a set by that name that is not ours.
            created = False
            result = await self.client.get(REPLICASETS, name, namespace)
            owner = controller_of(result)
            if owner is None or owner.get("uid") != d["metadata"]["uid"] or \
                    not equal_ignore_hash(result["spec"].get("template") or {},
                                          d["spec"].get("template") or {}):
                d["status"]["collisionCount"] = (collisions or 0) + 1
                await self._write_status(d)
                raise
        except errors.StatusError as exc:
            if has_progress_deadline(d):
                set_condition(d["status"], new_condition(
                    "Progressing", "False", FAILED_RS_CREATE,
                    f'Failed to create new replica set "{name}": {exc.message}'))
                try:
                    await self._write_status(d)
                except errors.StatusError:
                    pass
            raise
        await self._set_revision(d, next_revision)
        if created and has_progress_deadline(d):
            set_condition(d["status"], new_condition(
                "Progressing", "True", NEW_RS_CREATED, f'Created new replica set "{name}"'))
            await self._write_status(d)
        return result

    # --- paused, scaling ----------------------------------------------------------------------

    async def _check_paused(self, d: dict[str, Any]) -> None:
        if not has_progress_deadline(d):
            return
        condition = get_condition(d["status"], "Progressing")
        if condition is not None and condition.get("reason") == TIMED_OUT:
            return
        paused_recorded = condition is not None and condition.get("reason") == PAUSED
        if d["spec"].get("paused") and not paused_recorded:
            set_condition(d["status"], new_condition("Progressing", "Unknown", PAUSED,
                                                     "Deployment is paused"))
        elif not d["spec"].get("paused") and paused_recorded:
            set_condition(d["status"], new_condition("Progressing", "Unknown", RESUMED,
                                                     "Deployment is resumed"))
        else:
            return
        await self._write_status(d)

    async def _is_scaling_event(self, d: dict[str, Any], sets: list[dict[str, Any]]) -> bool:
        new_rs, old_sets = await self._sets_and_revision(d, sets, create=False)
        for rs in active([*old_sets, new_rs]):
            desired = int_annotation(rs, DESIRED_REPLICAS)
            if desired is not None and desired != replicas(d):
                return True
        return False

    async def _sync(self, d: dict[str, Any], sets: list[dict[str, Any]]) -> None:
        """Scale only (paused, or replicas changed mid-rollout)."""
        new_rs, old_sets = await self._sets_and_revision(d, sets, create=False)
        await self._scale(d, new_rs, old_sets)
        if d["spec"].get("paused"):
            await self._cleanup(d, old_sets)
        await self._sync_status(d, [*old_sets, new_rs], new_rs)

    async def _scale(self, d: dict[str, Any], new_rs: dict[str, Any] | None,
                     old_sets: list[dict[str, Any]]) -> None:
        desired = replicas(d)
        old_sets = sorted(old_sets, key=created_order, reverse=True)
        live = active([*old_sets, new_rs])
        if not live and (new_rs is not None or old_sets):
            # Nothing active: the newest takes the replicas.
            live_or_latest = new_rs if new_rs is not None else old_sets[0]
        elif len(live) == 1:
            live_or_latest = live[0]
        else:
            live_or_latest = None
        if live_or_latest is not None:
            if replicas(live_or_latest) != desired:
                await self._scale_if_needed(live_or_latest, desired, d)
            return
        if new_rs is not None and int_annotation(new_rs, DESIRED_REPLICAS) == desired and \
                replicas(new_rs) == desired and status_count(new_rs, "availableReplicas") == desired:
            # The new set is saturated: the old ones go.
            for rs in active(old_sets):
                await self._scale_if_needed(rs, 0, d)
            return
        if not is_rolling(d) or not live:
            return
        allowed = desired + max_surge(d) if desired > 0 else 0
        to_add = allowed - sum(replicas(rs) for rs in live)
        if to_add > 0:   # larger first; newer first among equals
            live.sort(key=lambda rs: (-replicas(rs), -created_order(rs)[0]))
        elif to_add < 0:  # larger first; older first among equals
            live.sort(key=lambda rs: (-replicas(rs), created_order(rs)))
        sizes, added = [], 0
        for rs in live:
            share = proportion(rs, d, to_add, added) if to_add else 0
            sizes.append(replicas(rs) + share)
            added += share
        if to_add and sizes:
            sizes[0] = max(0, sizes[0] + to_add - added)
        for rs, size in zip(live, sizes):
            await self._scale_set(rs, size, d)

    # --- rollouts -----------------------------------------------------------------------------

    async def _rollout_rolling(self, d: dict[str, Any], sets: list[dict[str, Any]]
                               ) -> float | None:
        new_rs, old_sets = await self._sets_and_revision(d, sets, create=True)
        all_sets = [*old_sets, new_rs]
        if await self._reconcile_new_set(d, all_sets, new_rs):
            return await self._sync_rollout_status(d, all_sets, new_rs)
        if await self._reconcile_old_sets(d, all_sets, active(old_sets), new_rs):
            return await self._sync_rollout_status(d, all_sets, new_rs)
        if deployment_complete(d, d["status"]):
            await self._cleanup(d, old_sets)
        return await self._sync_rollout_status(d, all_sets, new_rs)

    async def _reconcile_new_set(self, d: dict[str, Any], all_sets: list[dict[str, Any]],
                                 new_rs: dict[str, Any]) -> bool:
        desired = replicas(d)
        if replicas(new_rs) == desired:
            return False
        if replicas(new_rs) > desired:
            return await self._scale_if_needed(new_rs, desired, d)
        return await self._scale_if_needed(new_rs, new_rs_replicas(d, all_sets, new_rs), d)

    @staticmethod
    def _available(rs: dict[str, Any]) -> int:
        # A set just scaled down may still report the pods it is deleting.
        return min(status_count(rs, "availableReplicas"), replicas(rs))

    async def _reconcile_old_sets(self, d: dict[str, Any], all_sets: list[dict[str, Any]],
                                  old_sets: list[dict[str, Any]],
                                  new_rs: dict[str, Any]) -> bool:
        if sum(replicas(rs) for rs in old_sets) == 0:
            return False
        min_available = replicas(d) - max_unavailable(d)
        new_unavailable = replicas(new_rs) - status_count(new_rs, "availableReplicas")
        max_scaled_down = sum(replicas(rs) for rs in all_sets) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        # Unhealthy old pods first: removing them costs no availability.
        old_sets = sorted(old_sets, key=created_order)
        cleaned = 0
        for rs in old_sets:
            if cleaned >= max_scaled_down:
                break
            unhealthy = replicas(rs) - self._available(rs)
            if replicas(rs) == 0 or unhealthy <= 0:
                continue
            count = min(max_scaled_down - cleaned, unhealthy)
            await self._scale_if_needed(rs, replicas(rs) - count, d)
            cleaned += count
        # Then available ones, as long as min_available stay.
        available = sum(self._available(rs) for rs in [*old_sets, new_rs])
        scaled = 0
        budget = available - min_available
        for rs in old_sets:
            if scaled >= budget:
                break
            if replicas(rs) == 0:
                continue
            count = min(replicas(rs), budget - scaled)
            await self._scale_if_needed(rs, replicas(rs) - count, d)
            scaled += count
        return cleaned + max(scaled, 0) > 0

    async def _rollout_recreate(self, d: dict[str, Any], sets: list[dict[str, Any]]
                                ) -> float | None:
        new_rs, old_sets = await self._sets_and_revision(d, sets, create=False)
        all_sets = [*old_sets, new_rs]
        scaled_down = False
        for rs in active(old_sets):
            scaled_down |= await self._scale_if_needed(rs, 0, d)
        if scaled_down:
            return await self._sync_rollout_status(d, all_sets, new_rs)
        if self._old_pods_running(new_rs, old_sets):
            return await self._sync_rollout_status(d, all_sets, new_rs)
        if new_rs is None:
            new_rs, old_sets = await self._sets_and_revision(d, sets, create=True)
            all_sets = [*old_sets, new_rs]
        await self._scale_if_needed(new_rs, replicas(d), d)
        if deployment_complete(d, d["status"]):
            await self._cleanup(d, old_sets)
        return await self._sync_rollout_status(d, all_sets, new_rs)

    def _old_pods_running(self, new_rs: dict[str, Any] | None,
                          old_sets: list[dict[str, Any]]) -> bool:
        if sum(status_count(rs, "replicas") for rs in old_sets) > 0:
            return True
        for rs in old_sets:
            uid = rs["metadata"]["uid"]
            for pod in self.pods.by_index("owner", uid):
                if (controller_of(pod) or {}).get("uid") == uid and \
                        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    return True
        return False

    async def _cleanup(self, d: dict[str, Any], old_sets: list[dict[str, Any]]) -> None:
        """Delete the oldest empty sets beyond revisionHistoryLimit."""
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in old_sets if not rs["metadata"].get("deletionTimestamp")]
        surplus = len(alive) - limit
        if surplus <= 0:
            return
        alive.sort(key=lambda rs: (revision(rs) or 0, created_order(rs)))
        for rs in alive[:surplus]:
            if status_count(rs, "replicas") != 0 or replicas(rs) != 0 or \
                    rs["metadata"].get("generation", 1) > status_count(rs, "observedGeneration"):
                continue
            try:
                await self.client.delete(REPLICASETS, rs["metadata"]["name"],
                                         rs["metadata"]["namespace"])
            except errors.NotFound:
                pass

    # --- status -------------------------------------------------------------------------------

    async def _sync_status(self, d: dict[str, Any], all_sets: list[dict | None],
                           new_rs: dict[str, Any] | None) -> None:
        status = calculate_status([rs for rs in all_sets if rs is not None], new_rs, d)
        if status != d["status"]:
            d["status"] = status
            await self._write_status(d)

    async def _sync_rollout_status(self, d: dict[str, Any], all_sets: list[dict | None],
                                   new_rs: dict[str, Any] | None) -> float | None:
        """Status with the Progressing condition judged; seconds until the deadline should
        be checked, if the rollout is under way."""
        sets = [rs for rs in all_sets if rs is not None]
        status = calculate_status(sets, new_rs, d)
        if not has_progress_deadline(d):
            remove_condition(status, "Progressing")
        current = get_condition(d["status"], "Progressing")
        complete_before = status.get("replicas", 0) == status.get("updatedReplicas", 0) and \
            current is not None and current.get("reason") == NEW_RS_AVAILABLE
        if has_progress_deadline(d) and not complete_before:
            subject = f'ReplicaSet "{new_rs["metadata"]["name"]}"' if new_rs is not None \
                else f'Deployment "{d["metadata"]["name"]}"'
            if deployment_complete(d, status):
                set_condition(status, new_condition(
                    "Progressing", "True", NEW_RS_AVAILABLE, f"{subject} has successfully "
                    "progressed."))
            elif deployment_progressing(d, status):
                condition = new_condition("Progressing", "True", RS_UPDATED,
                                          f"{subject} is progressing.")
                if current is not None:
                    if current["status"] == "True":
                        condition["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(status, "Progressing")
                set_condition(status, condition)
            elif deployment_timed_out(d, status):
                set_condition(status, new_condition(
                    "Progressing", "False", TIMED_OUT, f"{subject} has timed out progressing."))
        if status != d["status"]:
            d["status"] = status
            await self._write_status(d)
            return None
        return self._stuck_recheck(d, status)

    @staticmethod
    def _stuck_recheck(d: dict[str, Any], status: dict[str, Any]) -> float | None:
        current = get_condition(d["status"], "Progressing")
        if not has_progress_deadline(d) or current is None:
            return None
        if deployment_complete(d, status) or current.get("reason") == TIMED_OUT:
            return None
        since = timestamps.parse(current.get("lastUpdateTime")) or 0.0
        after = since + d["spec"]["progressDeadlineSeconds"] - time.time()
        return max(after, 0.0) + 1.0

