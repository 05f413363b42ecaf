"""Job (batch/v1): run pods from a template until enough succeed, or give up.

Pods. Each pod is the template, as upstream: unless `manualSelector`, the API server gave
the template the labels `batch.kubernetes.io/controller-uid`, `controller-uid`,
`batch.kubernetes.io/job-name` and `job-name` at create, and `spec.selector` selects by the
uid. Pods also get a controller ownerReference and the finalizer
`batch.kubernetes.io/job-tracking`; the controller finds its pods by ownerReference (no
adoption of orphans), so it does not depend on the labels. Indexed jobs give each pod the
`batch.kubernetes.io/job-completion-index` annotation and label, hostname `<job>-<index>` and
`JOB_COMPLETION_INDEX` in the environment.

Counting (upstream's finalizer protocol; a finished pod is counted exactly once):
1. a pod that has the finalizer and has finished (Succeeded; Failed, or being deleted, counts
   as failed) goes into `status.uncountedTerminatedPods` (and, for Indexed, its index into
   `completedIndexes`): one status write, with the resourceVersion, so a stale cache loses;
2. its finalizer is removed (the uid is remembered until the cache shows that, so a stale pod
   is not counted again);
3. uids whose pod no longer has the finalizer move from `uncountedTerminatedPods` into
   `succeeded`/`failed`: a second status write.

Finishing. More failures than `backoffLimit`, or `activeDeadlineSeconds` after `startTime`,
add `FailureTarget` (BackoffLimitExceeded / DeadlineExceeded); enough successes (completions
reached; without completions, a success and nothing active) add `SuccessCriteriaMet`. From
then on no pod is created, active pods are deleted, and once every pod is counted and none is
terminating the terminal `Failed` or `Complete` condition is added (`completionTime` for
Complete), as upstream 1.32 does. Failed pods are replaced after an exponential back-off
(`backoff_base` * 2^(failures-1), capped; kept in memory, so a restart forgets it).

`suspend` deletes the active pods (not counted as failures) and sets `Suspended`
(JobSuspended); resuming sets it False (JobResumed) and restarts `startTime`, hence the
deadline. `ttlSecondsAfterFinished` (the TTL controller's job upstream) deletes a finished Job
with Background propagation; the garbage collector deletes its pods. A Job being deleted, or
gone, releases its pods' finalizers without counting them. Time comes from `now`, which tests
may replace.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid, key_of
from k8py.server.controllers.base import (Controller, Expectations, controller_of,
                                          is_active_pod, is_pod_ready)
from k8py.server.controllers.replicaset import pod_from_template, slow_start

JOBS = builtin("batch/v1", "jobs")
PODS = builtin("v1", "pods")
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
MAX_BATCH = 500

COMPLETE, FAILED = "Complete", "Failed"
SUCCESS_CRITERIA_MET, FAILURE_TARGET = "SuccessCriteriaMet", "FailureTarget"
SUSPENDED = "Suspended"
REASONS = {
    "CompletionsReached": "Reached expected number of succeeded pods",
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
}


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The job's condition of type `kind` if its status is True."""
    for item in (job.get("status") or {}).get("conditions") or ():
        if item.get("type") == kind and item.get("status") == "True":
            return item
    return None


def finished(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" once the job has ended, else None."""
    for kind in (COMPLETE, FAILED):
        if condition(job, kind):
            return kind
    return None


def finish_time(job: dict[str, Any]) -> float | None:
    kind = finished(job)
    if kind is None:
        return None
    status = job.get("status") or {}
    return timestamps.parse(status.get("completionTime")) or \
        timestamps.parse(condition(job, kind).get("lastTransitionTime"))


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _set_condition(conditions: list[dict], kind: str, status: str, reason: str,
                   message: str, now: str) -> bool:
    """Set a condition in place; whether anything changed."""
    for item in conditions:
        if item.get("type") == kind:
            if item.get("status") == status and item.get("reason") == reason:
                return False
            item.update(status=status, reason=reason, message=message,
                        lastProbeTime=now, lastTransitionTime=now)
            return True
    if status != "True":
        return False  # no False condition for what never happened
    conditions.append({"type": kind, "status": status, "lastProbeTime": now,
                       "lastTransitionTime": now, "reason": reason, "message": message})
    return True


def parse_indexes(text: str | None) -> set[int]:
    """`completedIndexes` ("1,3-5") as a set."""
    result: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        result.update(range(int(low), int(high or low) + 1))
    return result


def format_indexes(indexes: set[int]) -> str:
    parts, ordered, i = [], sorted(indexes), 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def completion_index(pod: dict[str, Any]) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and value.isdigit() else None


def _has_finalizer(pod: dict[str, Any]) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or ())


def _is_indexed(job: dict[str, Any]) -> bool:
    return job["spec"].get("completionMode") == "Indexed"


class JobController(Controller):
    name = "job"
    service_account = "job-controller"
    workers = 4
    backoff_base = 10.0    # upstream's DefaultJobPodFailureBackOff
    backoff_max = 600.0    # upstream's MaxJobPodFailureBackOff
    now = staticmethod(time.time)

    def setup(self) -> None:
        self.expectations = Expectations()
        self._released: dict[str, set[str]] = {}  # job key -> pod uids whose finalizer we removed
        self._backoff: dict[str, tuple[int, float]] = {}  # job key -> failures, last failure
        self.jobs = self.informer(JOBS)
        self.jobs.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                               self._job_deleted)
        self.pods = self.informer(PODS)
        self.pods.add_index("owner", by_owner_uid)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    # --- events -----------------------------------------------------------------------------

    def _job_deleted(self, job: dict[str, Any]) -> None:
        key = key_of(job)
        self.expectations.forget(key)
        self._released.pop(key, None)
        self._backoff.pop(key, None)
        for pod in self.pods.by_index("owner", job["metadata"]["uid"]):
            if _has_finalizer(pod):
                self.enqueue(("orphan", key_of(pod)))

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        owner = controller_of(pod)
        if owner is None or owner.get("kind") != "Job":
            return None
        return f"{pod['metadata']['namespace']}/{owner['name']}"

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        self.expectations.observed_add(key)
        self._enqueue_for(key, pod)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self._owner_key(new)
        if key is None:
            return
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
                "deletionTimestamp"):
            self.expectations.observed_delete(key)
        if not _has_finalizer(new):
            self._released.get(key, set()).discard(new["metadata"]["uid"])
        self._enqueue_for(key, new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        if not pod["metadata"].get("deletionTimestamp"):
            self.expectations.observed_delete(key)
        self._released.get(key, set()).discard(pod["metadata"]["uid"])
        self.enqueue(key)

    def _enqueue_for(self, key: str, pod: dict[str, Any]) -> None:
        """Queue the pod's job; a tracked pod whose job is gone gets its finalizer back."""
        job = self.jobs.get(key)
        owner = controller_of(pod)
        if job is None or job["metadata"]["uid"] != owner.get("uid"):
            if _has_finalizer(pod):
                self.enqueue(("orphan", key_of(pod)))
            return
        self.enqueue(key)

    # --- reconciling ------------------------------------------------------------------------

    def _owned_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.pods.by_index("owner", uid)
                if (controller_of(p) or {}).get("uid") == uid]

    async def reconcile(self, key: Any) -> float | None:
        if isinstance(key, tuple):
            pod = self.pods.get(key[1])
            if pod is not None and _has_finalizer(pod):
                job = self.jobs.get(self._owner_key(pod) or "")
                if job is None or job["metadata"]["uid"] != controller_of(pod).get("uid"):
                    await self._release(pod)
            return None
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            return None
        pods = self._owned_pods(job)
        if job["metadata"].get("deletionTimestamp") or finished(job):
            await asyncio.gather(*(self._release(p) for p in pods if _has_finalizer(p)))
            return await self._expire(job) if finished(job) else None
        return await self._sync(key, job, pods)

    async def _expire(self, job: dict[str, Any]) -> float | None:
        """ttlSecondsAfterFinished: seconds left, or delete the job now."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        ended = finish_time(job)
        if ttl is None or ended is None:
            return None
        left = ended + ttl - self.now()
        if left > 0:
            return left
        # as upstream's ttl-after-finished controller, with its service account's rights
        client = self.context.client_for("ttl-after-finished-controller") \
            if self.context.client_for is not None else self.client
        try:
            await client.delete(JOBS, job["metadata"]["name"], job["metadata"]["namespace"],
                                propagation="Background",
                                preconditions={"uid": job["metadata"]["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass
        return None

    async def _release(self, pod: dict[str, Any]) -> bool:
        """Remove the tracking finalizer; True once the pod no longer holds it (or is gone).
        False if the pod changed under us: its update event brings us back."""
        finalizers = pod["metadata"].get("finalizers") or []
        if TRACKING_FINALIZER not in finalizers:
            return True
        path = f"/metadata/finalizers/{finalizers.index(TRACKING_FINALIZER)}"
        try:
            await self.client.patch(PODS, pod["metadata"]["name"], [
                {"op": "test", "path": "/metadata/uid", "value": pod["metadata"]["uid"]},
                {"op": "test", "path": path, "value": TRACKING_FINALIZER},
                {"op": "remove", "path": path}], pod["metadata"]["namespace"],
                patch_type="json")
        except errors.NotFound:
            return True
        except errors.StatusError:
            return False
        owner = self._owner_key(pod)
        if owner is not None:
            self._released.setdefault(owner, set()).add(pod["metadata"]["uid"])
        return True

    async def _sync(self, key: str, job: dict[str, Any], pods: list[dict]) -> float | None:
        spec = job["spec"]
        now = self.now()
        stamp = _stamp(now)
        indexed = _is_indexed(job)
        completions = spec.get("completions")
        suspended = bool(spec.get("suspend"))
        status = clone(job.get("status") or {})
        conditions = status.setdefault("conditions", [])
        uncounted = status.get("uncountedTerminatedPods") or {}
        unc_succeeded = list(uncounted.get("succeeded") or [])
        unc_failed = list(uncounted.get("failed") or [])
        completed = parse_indexes(status.get("completedIndexes"))
        target = condition(job, SUCCESS_CRITERIA_MET) or condition(job, FAILURE_TARGET)

        # step 1: finished pods not yet counted join uncountedTerminatedPods
        in_flight = set(unc_succeeded) | set(unc_failed)
        released = self._released.get(key, set())
        uncountable = []  # to release without counting
        new_successes = new_failures = 0
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if not _has_finalizer(pod) or uid in in_flight or uid in released:
                continue
            phase = (pod.get("status") or {}).get("phase")
            deleted = bool(pod["metadata"].get("deletionTimestamp"))
            if phase == "Succeeded":
                if indexed:
                    index = completion_index(pod)
                    if index is None or index >= (completions or 0) or index in completed:
                        uncountable.append(pod)
                        continue
                    completed.add(index)
                unc_succeeded.append(uid)
                new_successes += 1
            elif phase == "Failed" or target or (deleted and not suspended):
                # a pod deleted before it finished counts as failed (upstream: orphans never
                # reach Failed); once the job is finishing every unfinished pod does
                unc_failed.append(uid)
                new_failures += 1
            elif deleted:
                uncountable.append(pod)  # stopped by suspension: not a failure

        active = [p for p in pods if is_active_pod(p)]
        terminating = [p for p in pods if p["metadata"].get("deletionTimestamp") and
                       (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        succeeded = status.get("succeeded", 0) + len(unc_succeeded)
        failed = status.get("failed", 0) + len(unc_failed)

        # the outcome
        recheck: list[float] = []
        if not target:
            kind = reason = None
            if failed > spec.get("backoffLimit", 6):
                kind, reason = FAILURE_TARGET, "BackoffLimitExceeded"
            elif not suspended and spec.get("activeDeadlineSeconds") is not None and \
                    status.get("startTime"):
                left = timestamps.parse(status["startTime"]) + \
                    spec["activeDeadlineSeconds"] - now
                if left <= 0:
                    kind, reason = FAILURE_TARGET, "DeadlineExceeded"
                else:
                    recheck.append(left)
            if kind is None:
                if indexed:
                    done = completions is not None and len(completed) >= completions
                elif completions is not None:
                    done = succeeded >= completions
                else:
                    done = succeeded > 0 and not active
                if done:
                    kind, reason = SUCCESS_CRITERIA_MET, "CompletionsReached"
            if kind is not None:
                _set_condition(conditions, kind, "True", reason, REASONS[reason], stamp)
                target = True
        if not target:
            if suspended:
                _set_condition(conditions, SUSPENDED, "True", "JobSuspended", "Job suspended",
                               stamp)
            elif _set_condition(conditions, SUSPENDED, "False", "JobResumed", "Job resumed",
                                stamp) or not status.get("startTime"):
                # first start, or resumed: the deadline counts from now
                status["startTime"] = stamp
                if spec.get("activeDeadlineSeconds") is not None:
                    recheck.append(spec["activeDeadlineSeconds"])

        status.update(ready=sum(1 for p in active if is_pod_ready(p)),
                      terminating=len(terminating))
        if active:
            status["active"] = len(active)
        else:
            status.pop("active", None)
        status["uncountedTerminatedPods"] = {
            k: v for k, v in (("succeeded", unc_succeeded), ("failed", unc_failed)) if v}
        if indexed:
            status["completedIndexes"] = format_indexes(completed)
        job = await self._write(job, status)
        # recorded: now the back-off may learn of them
        if new_successes:
            self._backoff.pop(key, None)
        if new_failures:
            count, _ = self._backoff.get(key, (0, 0.0))
            self._backoff[key] = (count + new_failures, now)

        # step 2: pods: create or delete; release the counted ones
        error = None
        if target or suspended:
            await self._delete_pods(key, job, active)
        elif self.expectations.satisfied(key):
            wait, error = await self._manage(key, job, active, succeeded, completed)
            if wait is not None:
                recheck.append(wait)
        counted = (set(unc_succeeded) | set(unc_failed)) - released
        outcomes = await asyncio.gather(
            *(self._release(p) for p in pods if p["metadata"]["uid"] in counted),
            *(self._release(p) for p in uncountable))
        if not all(outcomes):
            recheck.append(1.0)

        # step 3: released pods leave uncountedTerminatedPods for the counts
        status = clone(job.get("status") or {})
        present = {p["metadata"]["uid"]: p for p in pods}
        released = self._released.get(key, set())

        def settled(uid: str) -> bool:
            pod = present.get(uid)
            return pod is None or uid in released or not _has_finalizer(pod)

        uncounted = status.get("uncountedTerminatedPods") or {}
        for field in ("succeeded", "failed"):
            uids = uncounted.get(field) or []
            done = [u for u in uids if settled(u)]
            if done:
                status[field] = status.get(field, 0) + len(done)
                uncounted[field] = [u for u in uids if u not in done]
            if not uncounted.get(field):
                uncounted.pop(field, None)
        status["uncountedTerminatedPods"] = uncounted

        # the terminal condition, once every pod is counted and none is left running
        interim = condition({"status": status}, SUCCESS_CRITERIA_MET) or \
            condition({"status": status}, FAILURE_TARGET)
        holding = [p for p in pods if not settled(p["metadata"]["uid"])]
        if interim and not uncounted and not holding and not terminating:
            final = COMPLETE if interim["type"] == SUCCESS_CRITERIA_MET else FAILED
            _set_condition(status["conditions"], final, "True", interim["reason"],
                           interim["message"], stamp)
            if final == COMPLETE:
                await self.record(JOBS, job, "Normal", "Completed", "Job completed")
            else:
                await self.record(JOBS, job, "Warning", interim["reason"], interim["message"])
            if final == COMPLETE:
                status["completionTime"] = stamp
            status.pop("active", None)
            status["ready"] = 0
            if spec.get("ttlSecondsAfterFinished") is not None:
                recheck.append(spec["ttlSecondsAfterFinished"])
        await self._write(job, status)
        if error is not None:
            raise error
        return min(recheck) if recheck else None

    async def _write(self, job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Write the status if it changed (with the job's resourceVersion); the new job."""
        if not status.get("conditions"):
            status.pop("conditions", None)
        if status == (job.get("status") or {}):
            return job
        return await self.client.update_status(JOBS, {**job, "status": status})

    async def _delete_pods(self, key: str, job: dict[str, Any], pods: list[dict]) -> None:
        if not pods:
            return
        self.expectations.expect(key, deletes=len(pods))

        async def delete(pod: dict) -> None:
            try:
                await self.client.delete(PODS, pod["metadata"]["name"],
                                         pod["metadata"]["namespace"])
            except errors.NotFound:
                self.expectations.observed_delete(key)
                return
            await self.record(JOBS, job, "Normal", "SuccessfulDelete",
                              f"Deleted pod: {pod['metadata']['name']}")

        await asyncio.gather(*(delete(p) for p in pods))

    async def _manage(self, key: str, job: dict[str, Any], active: list[dict], succeeded: int,
                      completed: set[int]) -> tuple[float | None, errors.StatusError | None]:
        """Create or delete pods towards the wanted number; (seconds to wait, error)."""
        spec = job["spec"]
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        if _is_indexed(job):
            running = {completion_index(p) for p in active}
            missing = [i for i in range(completions or 0)
                       if i not in completed and i not in running]
            want = min(parallelism, len(active) + len(missing))
        elif completions is not None:
            want = max(0, min(parallelism, completions - succeeded))
            missing = []
        else:
            want = len(active) if succeeded > 0 else parallelism
            missing = []
        diff = want - len(active)
        if diff < 0:
            # the newest, least advanced pods go first
            # not ready before ready, then the newest first
            newest = sorted(active, key=lambda p: p["metadata"].get("creationTimestamp", ""),
                            reverse=True)
            await self._delete_pods(key, job, sorted(newest, key=is_pod_ready)[:-diff])
            return None, None
        if diff == 0:
            return None, None
        failures, last = self._backoff.get(key, (0, 0.0))
        if failures:
            delay = min(self.backoff_base * 2 ** (failures - 1), self.backoff_max)
            left = last + delay - self.now()
            if left > 0:
                return left, None
        count = min(diff, MAX_BATCH)
        indexes = iter(missing[:count])
        namespace = job["metadata"]["namespace"]
        self.expectations.expect(key, adds=count)

        async def create() -> None:
            index = next(indexes, None) if missing else None
            pod = await self.client.create(PODS, self.new_pod(job, index), namespace)
            await self.record(JOBS, job, "Normal", "SuccessfulCreate",
                              f"Created pod: {pod['metadata']['name']}")

        done, error = await slow_start(count, create)
        for _ in range(count - done):
            self.expectations.observed_add(key)
        return None, error

    def new_pod(self, job: dict[str, Any], index: int | None = None) -> dict[str, Any]:
        name = job["metadata"]["name"]
        labels: dict[str, str] = {}
        template = job["spec"].get("template") or {}
        if index is not None:
            labels[COMPLETION_INDEX] = str(index)
            template = clone(template)
        pod = pod_from_template(template, job, extra_labels=labels,
                                generate_name=f"{name}-{index}-" if index is not None else None)
        pod["metadata"].setdefault("finalizers", []).append(TRACKING_FINALIZER)
        if index is not None:
            pod["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
            pod_spec = pod["spec"]
            pod_spec.setdefault("hostname", f"{name}-{index}")
            env = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}
            for group in ("initContainers", "containers"):
                for container in pod_spec.get(group) or ():
                    container.setdefault("env", []).append(env)
        return pod
