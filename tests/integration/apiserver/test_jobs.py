"""Jobs in the API server: the selector and template labels generated from the uid on create
(upstream's job strategy), `manualSelector`, and the validation that goes with them."""

from __future__ import annotations

import re


JOBS = "/apis/batch/v1/namespaces/default/jobs"
UID_LABEL = "batch.kubernetes.io/controller-uid"


def job(name: str = "pi", labels: dict | None = None, **spec) -> dict:
    template: dict = {"spec": {"containers": [{"name": "c", "image": "perl"}],
                               "restartPolicy": "Never"}}
    if labels is not None:
        template["metadata"] = {"labels": labels}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": template, **spec}}


def fields(err: dict) -> list[str]:
    return sorted(c["field"] for c in err["details"]["causes"])


async def test_selector_and_labels_generated_from_the_uid(client):
    status, created = await client.request("POST", JOBS, job(labels={"app": "pi"}))
    assert status == 201, created
    uid = created["metadata"]["uid"]
    spec = created["spec"]
    assert spec["manualSelector"] is False
    assert spec["selector"] == {"matchLabels": {UID_LABEL: uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "pi", UID_LABEL: uid, "controller-uid": uid,
        "batch.kubernetes.io/job-name": "pi", "job-name": "pi"}
    _, got = await client.request("GET", f"{JOBS}/pi")
    assert got["spec"]["selector"] == spec["selector"]


async def test_generated_name_is_in_the_labels(client):
    body = job()
    body["metadata"] = {"generateName": "batch-"}
    status, created = await client.request("POST", JOBS, body)
    assert status == 201, created
    name = created["metadata"]["name"]
    assert name.startswith("batch-")
    labels = created["spec"]["template"]["metadata"]["labels"]
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == name


async def test_user_selector_without_manual_selector_is_refused(client):
    status, err = await client.request(
        "POST", JOBS, job(labels={"app": "pi"}, selector={"matchLabels": {"app": "pi"}}))
    assert status == 422, err
    assert fields(err) == ["spec.selector"]
    assert re.search(
        r'spec\.selector: Invalid value: v1\.LabelSelector\{MatchLabels:map\[string\]string\{'
        r'"app":"pi", "batch\.kubernetes\.io/controller-uid":"[0-9a-f-]{36}"\}, '
        r'MatchExpressions:\[\]v1\.LabelSelectorRequirement\(nil\)\}: `selector` not '
        r'auto-generated', err["message"]), err["message"]
    # so is one that names a uid of its own
    status, err = await client.request(
        "POST", JOBS, job(selector={"matchLabels": {UID_LABEL: "not-mine"}}))
    assert status == 422 and "spec.selector" in fields(err)


async def test_conflicting_template_labels_are_refused(client):
    status, err = await client.request("POST", JOBS, job(labels={"job-name": "other"}))
    assert status == 422, err
    assert fields(err) == ["spec.template.metadata.labels[job-name]"]
    assert "must be 'pi'" in err["message"]


async def test_manual_selector(client):
    status, err = await client.request("POST", JOBS, job(labels={"app": "pi"},
                                                         manualSelector=True))
    assert status == 422 and fields(err) == ["spec.selector"], err
    assert "spec.selector: Required value" in err["message"]

    status, err = await client.request("POST", JOBS, job(
        labels={"app": "pi"}, manualSelector=True, selector={"matchLabels": {"app": "other"}}))
    assert status == 422 and fields(err) == ["spec.template.metadata.labels"], err
    assert ('Invalid value: map[string]string{"app":"pi"}: `selector` does not match '
            "template `labels`") in err["message"]

    status, created = await client.request("POST", JOBS, job(
        labels={"app": "pi"}, manualSelector=True, selector={"matchLabels": {"app": "pi"}}))
    assert status == 201, created
    assert created["spec"]["selector"] == {"matchLabels": {"app": "pi"}}
    assert created["spec"]["template"]["metadata"]["labels"] == {"app": "pi"}


async def test_selector_and_template_are_immutable(client):
    _, created = await client.request("POST", JOBS, job())
    uid = created["metadata"]["uid"]
    status, err = await client.request(
        "PATCH", f"{JOBS}/pi", {"spec": {"selector": {"matchLabels": {"extra": "x"}}}},
        content_type="application/merge-patch+json")
    assert status == 422, err
    assert "spec.selector" in fields(err)
    assert "field is immutable" in err["message"]
    status, err = await client.request(
        "PATCH", f"{JOBS}/pi", {"spec": {"template": {"metadata": {"labels": {
            "controller-uid": None}}}}}, content_type="application/merge-patch+json")
    assert status == 422, err
    assert "spec.template" in fields(err)
    # what may change still does, and the generated selector stays
    status, patched = await client.request(
        "PATCH", f"{JOBS}/pi", {"spec": {"parallelism": 2}},
        content_type="application/merge-patch+json")
    assert status == 200, patched
    assert patched["spec"]["selector"] == {"matchLabels": {UID_LABEL: uid}}
    status, updated = await client.request(
        "PUT", f"{JOBS}/pi/status", {**patched, "status": {"active": 1}})
    assert status == 200 and updated["status"] == {"active": 1}, updated


async def test_server_side_apply_twice_keeps_the_generated_selector(client):
    manifest = job(labels={"app": "pi"})
    for _ in range(2):
        status, applied = await client.request(
            "PATCH", f"{JOBS}/pi", manifest, content_type="application/apply-patch+yaml",
            fieldManager="test")
        assert status in (200, 201), applied
    assert applied["spec"]["selector"] == {
        "matchLabels": {UID_LABEL: applied["metadata"]["uid"]}}
