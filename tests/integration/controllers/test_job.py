"""The Job controller against a real API server, the scheduler and simulated nodes (whose pods
end Succeeded or Failed by annotation): completions with parallelism, the back-off limit, the
active deadline, TTL after finishing, Indexed completion and suspension."""

from __future__ import annotations

import pytest

from k8py.api.resources import builtin
from k8py.server.controllers.job import (TRACKING_FINALIZER, JobController, format_indexes,
                                         parse_indexes)
from tests.conftest import eventually

JOBS = builtin("batch/v1", "jobs")
PODS = builtin("v1", "pods")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    """Failed pods are replaced after 50 ms, not upstream's 10 s."""
    monkeypatch.setattr(JobController, "backoff_base", 0.05)


def job(name: str, exit_code: int | None = 0, run_seconds: float = 0.3, **spec) -> dict:
    annotations = {"k8py.io/simulate-run-seconds": str(run_seconds)}
    if exit_code is not None:
        annotations["k8py.io/simulate-exit-code"] = str(exit_code)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"metadata": {"annotations": annotations},
                                  "spec": {"containers": [{"name": "c", "image": "work:1"}],
                                           "restartPolicy": "Never"}},
                     **spec}}


def pods_of(items: list[dict], name: str) -> list[dict]:
    return [p for p in items
            if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name]


def condition(obj: dict, kind: str) -> dict | None:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if item["type"] == kind and item["status"] == "True":
            return item
    return None


async def test_completions_with_parallelism(cluster):
    client = cluster.client
    created = await client.create(JOBS, job("pi", completions=3, parallelism=2))
    most_active = 0

    async def complete():
        nonlocal most_active
        pods = pods_of((await client.list(PODS, "default"))["items"], "pi")
        running = [p for p in pods
                   if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        most_active = max(most_active, len(running))
        return condition(await client.get(JOBS, "pi", "default"), "Complete")

    await eventually(complete, timeout=15, interval=0.05, what="job complete")
    await cluster.akubectl("wait", "--for=condition=complete", "job/pi", "--timeout=10s")
    done = await client.get(JOBS, "pi", "default")
    status = done["status"]
    assert status["succeeded"] == 3 and "failed" not in status and "active" not in status
    assert status["uncountedTerminatedPods"] == {} and status["ready"] == 0
    assert status["startTime"] and status["completionTime"]
    assert condition(done, "SuccessCriteriaMet")["reason"] == "CompletionsReached"
    assert condition(done, "Complete")["message"] == "Reached expected number of succeeded pods"
    assert most_active <= 2
    pods = pods_of((await client.list(PODS, "default"))["items"], "pi")
    assert len(pods) == 3 and all(p["status"]["phase"] == "Succeeded" for p in pods)
    uid = created["metadata"]["uid"]
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert labels["batch.kubernetes.io/controller-uid"] == uid == labels["controller-uid"]
        assert labels["job-name"] == "pi"
        assert TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or ())
        assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    table = (await cluster.akubectl("get", "job", "pi")).stdout
    assert "3/3" in table


async def test_backoff_limit(cluster):
    client = cluster.client
    await client.create(JOBS, job("fails", exit_code=1, run_seconds=0.1, backoffLimit=2))

    async def failed():
        return condition(await client.get(JOBS, "fails", "default"), "Failed")

    result = await eventually(failed, timeout=15, interval=0.05, what="job failed")
    assert result["reason"] == "BackoffLimitExceeded"
    assert result["message"] == "Job has reached the specified backoff limit"
    done = await client.get(JOBS, "fails", "default")
    assert condition(done, "FailureTarget")["reason"] == "BackoffLimitExceeded"
    assert done["status"]["failed"] == 3 and "completionTime" not in done["status"]
    await cluster.akubectl("wait", "--for=condition=failed", "job/fails", "--timeout=10s")
    pods = pods_of((await client.list(PODS, "default"))["items"], "fails")
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)


async def test_active_deadline(cluster):
    client = cluster.client
    await client.create(JOBS, job("slow", run_seconds=60, activeDeadlineSeconds=1))

    async def failed():
        return condition(await client.get(JOBS, "slow", "default"), "Failed")

    result = await eventually(failed, timeout=15, interval=0.05, what="deadline")
    assert result["reason"] == "DeadlineExceeded"
    assert result["message"] == "Job was active longer than specified deadline"
    done = await client.get(JOBS, "slow", "default")
    assert done["status"]["failed"] == 1 and "active" not in done["status"]

    async def pods_gone():
        return not pods_of((await client.list(PODS, "default"))["items"], "slow")

    await eventually(pods_gone, timeout=5, what="running pod deleted")


async def test_ttl_after_finished(cluster):
    client = cluster.client
    await client.create(JOBS, job("brief", ttlSecondsAfterFinished=1))

    async def gone():
        names = [j["metadata"]["name"] for j in (await client.list(JOBS, "default"))["items"]]
        return "brief" not in names

    await eventually(gone, timeout=15, interval=0.1, what="job deleted after its TTL")


async def test_indexed(cluster):
    client = cluster.client
    await client.create(JOBS, job("idx", completions=3, parallelism=3,
                                  completionMode="Indexed"))

    async def complete():
        return condition(await client.get(JOBS, "idx", "default"), "Complete")

    await eventually(complete, timeout=15, interval=0.05, what="indexed job complete")
    done = await client.get(JOBS, "idx", "default")
    assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3
    pods = pods_of((await client.list(PODS, "default"))["items"], "idx")
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                     for p in pods)
    assert indexes == ["0", "1", "2"]
    for pod in pods:
        index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        assert pod["spec"]["hostname"] == f"idx-{index}"
        env = pod["spec"]["containers"][0]["env"]
        assert env[0]["name"] == "JOB_COMPLETION_INDEX"


async def test_suspend_and_resume(cluster):
    client = cluster.client
    await client.create(JOBS, job("later", suspend=True))

    async def suspended():
        return condition(await client.get(JOBS, "later", "default"), "Suspended")

    result = await eventually(suspended, timeout=10, what="suspended")
    assert result["reason"] == "JobSuspended"
    assert not pods_of((await client.list(PODS, "default"))["items"], "later")
    await client.patch(JOBS, "later", {"spec": {"suspend": False}}, "default")

    async def complete():
        return condition(await client.get(JOBS, "later", "default"), "Complete")

    await eventually(complete, timeout=15, interval=0.05, what="resumed job complete")
    done = await client.get(JOBS, "later", "default")
    resumed = [c for c in done["status"]["conditions"] if c["type"] == "Suspended"][0]
    assert resumed["status"] == "False" and resumed["reason"] == "JobResumed"
    assert done["status"]["startTime"]


async def test_kubectl_finds_pods_by_the_generated_selector(cluster):
    """`kubectl get job -o wide` shows the selector the API server generated, and a lookup by
    it (what `kubectl logs job/x` does) finds the Job's pods and only them."""
    client = cluster.client
    created = await client.create(JOBS, job("sel", exit_code=None, parallelism=2, completions=2))
    await client.create(JOBS, job("other", exit_code=None))
    uid = created["metadata"]["uid"]
    selector = f"batch.kubernetes.io/controller-uid={uid}"
    out = await cluster.akubectl("get", "job", "sel", "-o", "wide")
    header, row = out.stdout.splitlines()
    assert header.split()[-1] == "SELECTOR" and row.split()[-1] == selector

    async def two_pods():
        return len(pods_of((await client.list(PODS, "default"))["items"], "sel")) == 2

    await eventually(two_pods, timeout=10, what="the job's pods")
    mine = {f"pod/{p['metadata']['name']}"
            for p in pods_of((await client.list(PODS, "default"))["items"], "sel")}
    out = await cluster.akubectl("get", "pods", "-l", selector, "-o", "name")
    assert set(out.stdout.split()) == mine
    out = await cluster.akubectl("get", "pods", "-l", "job-name=sel", "-o", "name")
    assert set(out.stdout.split()) == mine


def test_completed_indexes_text():
    assert parse_indexes("0-2,4,7-8") == {0, 1, 2, 4, 7, 8}
    assert format_indexes({0, 1, 2, 4, 7, 8}) == "0-2,4,7-8"
    assert parse_indexes("") == set() and format_indexes(set()) == ""
