"""CronJob (batch/v1): create a Job from `spec.jobTemplate` at each time the schedule names.

Per reconcile, as upstream's CronJob controller (v2):
- `status.active` is brought in line with the Jobs the CronJob controls (found by
  ownerReference): finished or vanished ones leave it (a Complete one moves
  `lastSuccessfulTime` to its completionTime); unfinished ones missing from it join it, so a
  Job made by `kubectl create job --from=cronjob/x` is tracked too;
- unless suspended or being deleted: the most recent scheduled time in (lastScheduleTime or
  creationTimestamp, now] (no earlier than now - `startingDeadlineSeconds`) is run, once:
  `concurrencyPolicy` Forbid holds it while a Job is active, Replace deletes the active Jobs
  first (Background propagation), Allow runs alongside. The Job is named
  `<cronjob>-<scheduled time in minutes since the epoch>` (so a time runs once even after a
  restart: a second create is AlreadyExists), annotated
  `batch.kubernetes.io/cronjob-scheduled-timestamp` (RFC 3339 in the CronJob's time zone) and
  owned by the CronJob; `lastScheduleTime` records the time;
- finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted,
  the oldest first;
- the key is queued again just after the next scheduled time.

Schedules are evaluated in `spec.timeZone` (an IANA name), else UTC (upstream uses the
controller manager's local zone). An unparseable schedule or unknown zone stops the CronJob
until it is edited. Time comes from `now` (seconds since the epoch), which tests replace to
make minutes pass at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import zoneinfo
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid, key_of
from k8py.server.controllers import cron
from k8py.server.controllers.base import Controller, controller_of, owner_reference
from k8py.server.controllers.job import COMPLETE, JOBS, finished

log = logging.getLogger(__name__)

CRONJOBS = builtin("batch/v1", "cronjobs")
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
RECHECK_SLACK = 0.1  # upstream requeues 100 ms after the next scheduled time


def _rfc3339(moment: datetime.datetime) -> str:
    """Go's time.RFC3339 (`Z` for UTC, else the offset)."""
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_reference(job: dict[str, Any]) -> dict[str, Any]:
    metadata = job["metadata"]
    return {"kind": "Job", "namespace": metadata["namespace"], "name": metadata["name"],
            "uid": metadata["uid"], "apiVersion": "batch/v1",
            "resourceVersion": metadata.get("resourceVersion", "")}


def job_name(cronjob_name: str, scheduled: datetime.datetime) -> str:
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def job_from_template(cronjob: dict[str, Any], scheduled: datetime.datetime,
                      zone: datetime.tzinfo) -> dict[str, Any]:
    template = cronjob["spec"].get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = _rfc3339(scheduled.astimezone(zone))
    metadata = {"name": job_name(cronjob["metadata"]["name"], scheduled),
                "namespace": cronjob["metadata"]["namespace"],
                "annotations": annotations,
                "ownerReferences": [owner_reference(cronjob)]}
    if template_meta.get("labels"):
        metadata["labels"] = dict(template_meta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": clone(template.get("spec") or {})}


class CronJobController(Controller):
    name = "cronjob"
    service_account = "cronjob-controller"
    workers = 2
    now = staticmethod(time.time)

    def setup(self) -> None:
        self.cronjobs = self.informer(CRONJOBS)
        self.cronjobs.add_handlers(self.enqueue_object,
                                   lambda old, new: self.enqueue_object(new))
        self.jobs = self.informer(JOBS)
        self.jobs.add_index("owner", by_owner_uid)
        self.jobs.add_handlers(self._job_changed, lambda old, new: self._job_changed(new),
                               self._job_changed)

    def _job_changed(self, job: dict[str, Any]) -> None:
        self.enqueue_owner(job, "CronJob")

    def _owned_jobs(self, cronjob: dict[str, Any]) -> list[dict[str, Any]]:
        uid = cronjob["metadata"]["uid"]
        return [j for j in self.jobs.by_index("owner", uid)
                if (controller_of(j) or {}).get("uid") == uid]

    async def reconcile(self, key: str) -> float | None:
        cronjob = self.cronjobs.get(key)
        if cronjob is None:
            return None
        spec = cronjob["spec"]
        status = clone(cronjob.get("status") or {})
        jobs = self._owned_jobs(cronjob)
        await self._track_active(cronjob, status, jobs)
        recheck = None
        if not cronjob["metadata"].get("deletionTimestamp") and not spec.get("suspend"):
            recheck = await self._run_schedule(cronjob, status)
        await self._prune_history(cronjob, jobs)
        if not status.get("active"):
            status.pop("active", None)
        if status != (cronjob.get("status") or {}):
            await self.client.update_status(CRONJOBS, {**cronjob, "status": status})
        return recheck

    async def _track_active(self, cronjob: dict[str, Any], status: dict[str, Any],
                            jobs: list[dict]) -> None:
        by_uid = {j["metadata"]["uid"]: j for j in jobs}
        active = []
        for ref in status.get("active") or []:
            job = by_uid.get(ref.get("uid"))
            if job is None:
                # not in the cache: gone, or too new for it; ask the API server
                try:
                    job = await self.client.get(JOBS, ref["name"], ref.get("namespace"))
                except errors.NotFound:
                    continue
                if job["metadata"]["uid"] != ref.get("uid"):
                    continue
            outcome = finished(job)
            if not outcome:
                active.append(ref)
            else:
                await self.record(CRONJOBS, cronjob, "Normal", "SawCompletedJob",
                                  f"Saw completed job: {job['metadata']['name']}, condition: "
                                  f"{outcome}")
        listed = {ref.get("uid") for ref in active}
        for job in jobs:
            kind = finished(job)
            if kind is None and job["metadata"]["uid"] not in listed and \
                    not job["metadata"].get("deletionTimestamp"):
                active.append(_job_reference(job))
            if kind == COMPLETE:
                completed = (job.get("status") or {}).get("completionTime")
                last = status.get("lastSuccessfulTime")
                if completed and (not last or timestamps.parse(completed) >
                                  timestamps.parse(last)):
                    status["lastSuccessfulTime"] = completed
        status["active"] = active

    async def _run_schedule(self, cronjob: dict[str, Any],
                            status: dict[str, Any]) -> float | None:
        spec = cronjob["spec"]
        name = key_of(cronjob)
        try:
            zone = zoneinfo.ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else \
                datetime.timezone.utc
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            log.warning("cronjob %s: unknown time zone %r", name, spec.get("timeZone"))
            return None
        try:
            schedule = cron.parse(spec.get("schedule", ""))
        except cron.ScheduleError as exc:
            log.warning("cronjob %s: unparseable schedule %r: %s", name, spec.get("schedule"),
                        exc)
            return None
        now = datetime.datetime.fromtimestamp(self.now(), datetime.timezone.utc)
        earliest = timestamps.parse(status.get("lastScheduleTime")) or \
            timestamps.parse(cronjob["metadata"].get("creationTimestamp")) or now.timestamp()
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now.timestamp() - deadline)
        scheduled, missed = cron.most_recent(
            schedule, datetime.datetime.fromtimestamp(earliest, datetime.timezone.utc), now,
            zone)
        if missed > 100:
            log.warning("cronjob %s: too many missed start times (> 100); set or decrease "
                        ".spec.startingDeadlineSeconds or check clock skew", name)
        if scheduled is not None:
            await self._start(cronjob, status, scheduled, zone)
        upcoming = cron.next_after(schedule, now, zone)
        if upcoming is None:
            return None
        return (upcoming - now).total_seconds() + RECHECK_SLACK

    async def _start(self, cronjob: dict[str, Any], status: dict[str, Any],
                     scheduled: datetime.datetime, zone: datetime.tzinfo) -> None:
        spec = cronjob["spec"]
        name = job_name(cronjob["metadata"]["name"], scheduled)
        namespace = cronjob["metadata"]["namespace"]
        if any(ref.get("name") == name for ref in status.get("active") or ()):
            return
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and status.get("active"):
            # not run now, and lastScheduleTime stays: as upstream, the time still runs when
            # the active Job ends if it is then the most recent one (within the deadline)
            return
        if policy == "Replace":
            for ref in status.get("active") or ():
                try:
                    await self.client.delete(JOBS, ref["name"], ref.get("namespace"),
                                             propagation="Background",
                                             preconditions={"uid": ref["uid"]})
                except (errors.NotFound, errors.Conflict):
                    pass
            status["active"] = []
        try:
            job = await self.client.create(JOBS, job_from_template(cronjob, scheduled, zone),
                                           namespace)
        except errors.AlreadyExists:
            # made by an earlier run of ours (its status write lost) or by someone else
            existing = self.jobs.get(f"{namespace}/{name}")
            if existing is not None and (controller_of(existing) or {}).get("uid") == \
                    cronjob["metadata"]["uid"] and not finished(existing) and not any(
                        ref.get("uid") == existing["metadata"]["uid"]
                        for ref in status.get("active") or ()):
                status.setdefault("active", []).append(_job_reference(existing))
        else:
            status.setdefault("active", []).append(_job_reference(job))
            await self.record(CRONJOBS, cronjob, "Normal", "SuccessfulCreate",
                              f"Created job {job['metadata']['name']}")
        status["lastScheduleTime"] = _utc(scheduled)

    async def _prune_history(self, cronjob: dict[str, Any], jobs: list[dict]) -> None:
        spec = cronjob["spec"]
        doomed: list[dict] = []
        for kind, limit in ((COMPLETE, spec.get("successfulJobsHistoryLimit")),
                            ("Failed", spec.get("failedJobsHistoryLimit"))):
            if limit is None:
                continue
            done = [j for j in jobs if finished(j) == kind and
                    not j["metadata"].get("deletionTimestamp")]
            if len(done) <= limit:
                continue
            # oldest start first; jobs that never started sort last, then by name
            done.sort(key=lambda j: (timestamps.parse((j.get("status") or {}).get(
                "startTime")) or float("inf"), j["metadata"]["name"]))
            doomed.extend(done[:len(done) - limit])

        async def delete(job: dict) -> None:
            try:
                await self.client.delete(JOBS, job["metadata"]["name"],
                                         job["metadata"]["namespace"], propagation="Background",
                                         preconditions={"uid": job["metadata"]["uid"]})
            except (errors.NotFound, errors.Conflict):
                return
            await self.record(CRONJOBS, cronjob, "Normal", "SuccessfulDelete",
                              f"Deleted job {job['metadata']['name']}")

        await asyncio.gather(*(delete(j) for j in doomed))
