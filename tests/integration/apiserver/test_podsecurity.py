"""PodSecurity admission through a real API server, over HTTP (raw, the official Python
client, kubectl): enforce refuses pods with upstream's message, warn answers with `Warning`
headers (also for workloads, which are never enforced), invalid namespace labels are
refused, tightening enforce warns about existing pods, dry runs are judged alike, pod
updates are judged only when their images change, and audit annotations reach the request."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from kubernetes import client as k8s, config

from k8py.api.resources import builtin
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.genericstore import WriteContext
from k8py.server.apiserver.inprocess import API_SERVER as IDENTITY
from tests.e2e.conftest import find_kubectl

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
AUDIT = "pod-security.kubernetes.io/audit"

RESTRICTED_VIOLATIONS = (
    'allowPrivilegeEscalation != false (container "c" must set '
    'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" '
    'must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or '
    'container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or '
    'container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
    '"Localhost")')
RESTRICTED_REASONS = ("allowPrivilegeEscalation != false, unrestricted capabilities, "
                      "runAsNonRoot != true, seccompProfile")
COMPLIANT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
             "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def pod(name: str, image: str = "busybox", **security) -> dict:
    the_container = {"name": "c", "image": image}
    if security:
        the_container["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [the_container]}}


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def warning(text: str) -> str:
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def namespace(client, name: str, **labels: str) -> None:
    status, body = await client.request("POST", "/api/v1/namespaces", {
        "metadata": {"name": name, "labels": labels}})
    assert status == 201, body


async def post(client, path: str, body: dict, **params) -> tuple[int, dict, list[str]]:
    """(status, body, Warning headers)."""
    async with client.session.post(client.server.url + path, json=body,
                                   params=params) as response:
        return response.status, await response.json(), response.headers.getall("Warning", [])


async def patch(client, path: str, body: dict, content_type="application/merge-patch+json",
                **params) -> tuple[int, dict, list[str]]:
    async with client.session.patch(client.server.url + path, json=body, params=params,
                                    headers={"Content-Type": content_type}) as response:
        return response.status, await response.json(), response.headers.getall("Warning", [])


async def test_enforce_refuses_a_violating_pod_with_upstreams_message(client):
    await namespace(client, "strict", **{ENFORCE: "restricted"})
    status, body, warnings = await post(client, "/api/v1/namespaces/strict/pods", pod("p"))
    assert status == 403 and warnings == []
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "p" is forbidden: violates PodSecurity '
                               f'"restricted:latest": {RESTRICTED_VIOLATIONS}',
                    "reason": "Forbidden", "details": {"name": "p", "kind": "pods"},
                    "code": 403}
    assert (await client.request("GET", "/api/v1/namespaces/strict/pods/p"))[0] == 404
    status, _, warnings = await post(client, "/api/v1/namespaces/strict/pods",
                                     pod("ok", **COMPLIANT))
    assert status == 201 and warnings == []
    # a generated name is the name in the message, as upstream's
    generated = pod("")
    generated["metadata"] = {"generateName": "gen-"}
    status, body, _ = await post(client, "/api/v1/namespaces/strict/pods", generated)
    assert status == 403 and body["message"].startswith('pods "gen-')
    assert body["details"]["name"].startswith("gen-")


async def test_enforce_pins_a_version_and_baseline_allows_more(client):
    await namespace(client, "base", **{ENFORCE: "baseline", ENFORCE + "-version": "v1.24"})
    status, body, warnings = await post(client, "/api/v1/namespaces/base/pods", pod(
        "priv", privileged=True))
    assert status == 403 and body["message"] == (
        'pods "priv" is forbidden: violates PodSecurity "baseline:v1.24": privileged '
        '(container "c" must not set securityContext.privileged=true)')
    status, _, warnings = await post(client, "/api/v1/namespaces/base/pods", pod("plain"))
    assert status == 201 and warnings == []


async def test_warn_answers_with_a_warning_header_and_allows(client):
    await namespace(client, "warned", **{WARN: "restricted"})
    status, created, warnings = await post(client, "/api/v1/namespaces/warned/pods", pod("p"))
    assert status == 201 and created["metadata"]["name"] == "p"
    assert warnings == [warning(f'would violate PodSecurity "restricted:latest": '
                                f'{RESTRICTED_VIOLATIONS}')]
    # an enforce level stricter than warn's warns at the enforce level too (upstream's default)
    await namespace(client, "both", **{ENFORCE: "baseline", WARN: "restricted",
                                       WARN + "-version": "v1.22"})
    status, _, warnings = await post(client, "/api/v1/namespaces/both/pods", pod("p"))
    assert status == 201 and warnings == [warning(
        'would violate PodSecurity "restricted:v1.22": ' + RESTRICTED_VIOLATIONS)]
    # nothing labelled: nothing said
    status, _, warnings = await post(client, "/api/v1/namespaces/default/pods", pod(
        "priv", privileged=True))
    assert status == 201 and warnings == []


async def test_workloads_are_warned_about_never_refused(client):
    await namespace(client, "strict", **{ENFORCE: "restricted"})
    status, created, warnings = await post(
        client, "/apis/apps/v1/namespaces/strict/deployments", deployment("web"))
    assert status == 201 and created["metadata"]["name"] == "web"
    assert warnings == [warning('would violate PodSecurity "restricted:latest": '
                                + RESTRICTED_VIOLATIONS)]
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                   "spec": {"restartPolicy": "Never", "containers": [
                       {"name": "c", "image": "x", "securityContext": {"privileged": True}}
                   ]}}}}}}
    status, _, warnings = await post(client, "/apis/batch/v1/namespaces/strict/cronjobs",
                                     cronjob)
    assert status == 201 and len(warnings) == 1
    assert warnings[0].startswith(warning('would violate PodSecurity "restricted:latest": '
                                          'privileged (container "c" must not set '
                                          'securityContext.privileged=true), ')[:-1])
    # the scale subresource and status are not judged
    status, _, warnings = await patch(client, "/apis/apps/v1/namespaces/strict/deployments/web"
                                              "/scale", {"spec": {"replicas": 2}})
    assert status == 200 and warnings == []


async def test_invalid_labels_are_refused(client):
    status, body = await client.request("POST", "/api/v1/namespaces", {
        "metadata": {"name": "bad", "labels": {ENFORCE: "strict"}}})
    assert status == 422
    assert body["message"] == (
        'Namespace "bad" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted')
    assert body["reason"] == "Invalid" and body["details"] == {
        "name": "bad", "kind": "Namespace", "causes": [{
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "strict": must be one of privileged, baseline, '
                       "restricted",
            "field": "metadata.labels[pod-security.kubernetes.io/enforce]"}]}
    await namespace(client, "good")
    status, body, _ = await patch(client, "/api/v1/namespaces/good", {"metadata": {"labels": {
        WARN + "-version": "1.30", AUDIT: "Restricted"}}})
    assert status == 422 and body["message"] == (
        'Namespace "good" is invalid: [metadata.labels[pod-security.kubernetes.io/audit]: '
        'Invalid value: "Restricted": must be one of privileged, baseline, restricted, '
        'metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "1.30": '
        'must be "latest" or "v1.x"]')
    status, _, _ = await patch(client, "/api/v1/namespaces/good", {"metadata": {"labels": {
        ENFORCE: "baseline", ENFORCE + "-version": "v1.31"}}})
    assert status == 200


async def test_tightening_enforce_warns_about_existing_pods(client):
    await namespace(client, "apps")
    for name in ("web-b", "web-a"):
        assert (await post(client, "/api/v1/namespaces/apps/pods", pod(name)))[0] == 201
    assert (await post(client, "/api/v1/namespaces/apps/pods", pod(
        "root", **{**COMPLIANT, "runAsUser": 0})))[0] == 201
    assert (await post(client, "/api/v1/namespaces/apps/pods", pod("fine", **COMPLIANT)))[0] \
        == 201
    status, _, warnings = await patch(client, "/api/v1/namespaces/apps", {
        "metadata": {"labels": {ENFORCE: "restricted"}}}, dryRun="All")
    expected = [
        warning('existing pods in namespace "apps" violate the new PodSecurity enforce level '
                '"restricted:latest"'),
        warning("root: runAsUser=0"),
        warning(f"web-a (and 1 other pod): {RESTRICTED_REASONS}")]
    assert status == 200 and warnings == expected
    status, _, warnings = await patch(client, "/api/v1/namespaces/apps", {
        "metadata": {"labels": {ENFORCE: "restricted"}}})
    assert status == 200 and warnings == expected
    # the same level again, or a looser one: nothing to say
    status, _, warnings = await patch(client, "/api/v1/namespaces/apps", {
        "metadata": {"labels": {ENFORCE: "baseline"}}})
    assert status == 200 and warnings == []
    status, _, warnings = await patch(client, "/api/v1/namespaces/apps", {
        "metadata": {"labels": {"team": "x"}}})
    assert status == 200 and warnings == []


async def test_dry_runs_are_judged_alike(client):
    await namespace(client, "strict", **{ENFORCE: "baseline", WARN: "restricted"})
    status, body, warnings = await post(client, "/api/v1/namespaces/strict/pods",
                                        pod("p", privileged=True), dryRun="All")
    assert status == 403 and body["message"].startswith(
        'pods "p" is forbidden: violates PodSecurity "baseline:latest": privileged')
    status, _, warnings = await post(client, "/api/v1/namespaces/strict/pods", pod("p"),
                                     dryRun="All")
    assert status == 201 and warnings == [warning(
        'would violate PodSecurity "restricted:latest": ' + RESTRICTED_VIOLATIONS)]
    assert (await client.request("GET", "/api/v1/namespaces/strict/pods/p"))[0] == 404


async def test_pod_updates_are_judged_when_images_change(client):
    await namespace(client, "later")
    assert (await post(client, "/api/v1/namespaces/later/pods", pod("p")))[0] == 201
    assert (await patch(client, "/api/v1/namespaces/later", {
        "metadata": {"labels": {ENFORCE: "restricted"}}}))[0] == 200
    # labels, annotations, status: allowed without a word
    status, _, warnings = await patch(client, "/api/v1/namespaces/later/pods/p", {
        "metadata": {"labels": {"a": "b"}}})
    assert status == 200 and warnings == []
    status, _, _ = await patch(client, "/api/v1/namespaces/later/pods/p/status", {
        "status": {"message": "hi"}})
    assert status == 200
    status, body, _ = await patch(client, "/api/v1/namespaces/later/pods/p", {
        "spec": {"containers": [{"name": "c", "image": "busybox:2"}]}},
        "application/strategic-merge-patch+json")
    assert status == 403 and body["message"] == (
        'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
        + RESTRICTED_VIOLATIONS)


async def test_audit_annotations_reach_the_request(server):
    """What the audit log will read: the write context's annotations (over HTTP, the
    request's `admission.AUDIT_ANNOTATIONS_KEY`)."""
    store = server.app[apiserver.REST_KEY].store
    namespaces, pods = builtin("v1", "namespaces"), builtin("v1", "pods")
    await store.create(namespaces, None, {"metadata": {"name": "audited", "labels": {
        AUDIT: "restricted", ENFORCE: "baseline"}}}, WriteContext(IDENTITY, "test"))
    ctx = WriteContext(IDENTITY, "test")
    await store.create(pods, "audited", pod("p"), ctx)
    assert ctx.annotations == {
        "pod-security.kubernetes.io/enforce-policy": "baseline:latest",
        "pod-security.kubernetes.io/audit-violations":
            'would violate PodSecurity "restricted:latest": ' + RESTRICTED_VIOLATIONS}
    assert ctx.warnings == []
    ctx = WriteContext(IDENTITY, "test")
    await store.create(pods, "default", pod("q"), ctx)
    assert ctx.annotations == {"pod-security.kubernetes.io/enforce-policy":
                               "privileged:latest"}


async def test_the_python_client_sees_the_refusal(server, tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
    core = k8s.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    await asyncio.to_thread(core.create_namespace, k8s.V1Namespace(
        metadata=k8s.V1ObjectMeta(name="strict", labels={ENFORCE: "restricted"})))
    with pytest.raises(k8s.ApiException) as refused:
        await asyncio.to_thread(core.create_namespaced_pod, "strict", pod("p"))
    assert refused.value.status == 403
    assert 'violates PodSecurity \\"restricted:latest\\"' in refused.value.body


@pytest.mark.parametrize("server", ["memory"], indirect=True)
async def test_kubectl_prints_the_warnings(server, tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([find_kubectl(), "--kubeconfig", kubeconfig, "--cache-dir",
                               str(tmp_path / "cache"), *args], input=input,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HOME": str(tmp_path)})

    made = await asyncio.to_thread(kubectl, "create", "namespace", "apps")
    assert made.returncode == 0, made.stderr
    made = await asyncio.to_thread(kubectl, "-n", "apps", "run", "web", "--image=busybox")
    assert made.returncode == 0, made.stderr
    labelled = await asyncio.to_thread(kubectl, "label", "namespace", "apps",
                                       f"{ENFORCE}=restricted", f"{WARN}=restricted")
    assert labelled.returncode == 0, labelled.stderr
    assert labelled.stderr.splitlines() == [
        'Warning: existing pods in namespace "apps" violate the new PodSecurity enforce level'
        ' "restricted:latest"', f"Warning: web: {RESTRICTED_REASONS}"]
    created = await asyncio.to_thread(
        kubectl, "-n", "apps", "create", "deployment", "d", "--image=busybox")
    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines() == [  # (kubectl names the container after the image)
        'Warning: would violate PodSecurity "restricted:latest": '
        + RESTRICTED_VIOLATIONS.replace('container "c"', 'container "busybox"')]
    refused = await asyncio.to_thread(kubectl, "-n", "apps", "run", "other",
                                      "--image=busybox")
    assert refused.returncode == 1
    violations = RESTRICTED_VIOLATIONS.replace('container "c"', 'container "other"')
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): pods "other" is forbidden: violates PodSecurity '
        f'"restricted:latest": {violations}')
