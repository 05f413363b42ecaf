"""ServiceAccount admission on a control plane whose service-account and root-CA controllers
run, through the official Python client: a pod's account defaults to `default`, gets the
`kube-api-access-*` projected volume mounted in every container, unless the pod or its
account says `automountServiceAccountToken: false`; a pod naming a missing account is
refused with upstream's 403; a container mounting the path itself keeps its mount."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")


def run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
async def core(cluster):
    async def account():
        try:
            return await cluster.client.get(SERVICE_ACCOUNTS, "default", "default")
        except errors.NotFound:
            return None

    await eventually(account, 10, what="the default ServiceAccount")
    return client.CoreV1Api(config.new_client_from_config(config_file=cluster.kubeconfig))


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


async def test_pod_gets_the_token_volume_and_mounts(core):
    created = await run(core.create_namespaced_pod, "default", pod(
        "web", initContainers=[{"name": "init", "image": "busybox"}],
        containers=[{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]))
    spec = created.spec
    assert spec.service_account_name == "default" and spec.service_account == "default"
    assert len(spec.volumes) == 1
    volume = spec.volumes[0]
    assert re.fullmatch(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}", volume.name)
    raw = core.api_client.sanitize_for_serialization(volume)
    assert raw["projected"] == {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                               "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}
    for container in [*spec.init_containers, *spec.containers]:
        assert [(m.name, m.mount_path, m.read_only) for m in container.volume_mounts] == [
            (volume.name, MOUNT_PATH, True)]


async def test_automount_false_on_the_pod_or_its_account(core):
    created = await run(core.create_namespaced_pod, "default",
                        pod("quiet", automountServiceAccountToken=False))
    assert created.spec.volumes is None and created.spec.containers[0].volume_mounts is None
    await run(core.create_namespaced_service_account, "default", {
        "metadata": {"name": "robot"}, "automountServiceAccountToken": False,
        "imagePullSecrets": [{"name": "registry"}]})
    created = await run(core.create_namespaced_pod, "default",
                        pod("robotic", serviceAccountName="robot"))
    assert created.spec.volumes is None
    assert [s.name for s in created.spec.image_pull_secrets] == ["registry"]
    # the pod's word wins over its account's
    created = await run(core.create_namespaced_pod, "default", pod(
        "insists", serviceAccountName="robot", automountServiceAccountToken=True))
    assert created.spec.volumes[0].name.startswith("kube-api-access-")


async def test_missing_account_is_refused(core):
    with pytest.raises(ApiException) as refused:
        await run(core.create_namespaced_pod, "default", pod("orphan",
                                                             serviceAccountName="ghost"))
    assert refused.value.status == 403
    body = json.loads(refused.value.body)
    assert body["reason"] == "Forbidden"
    assert body["message"] == ('pods "orphan" is forbidden: error looking up service account '
                               'default/ghost: serviceaccount "ghost" not found')
    assert body["details"] == {"name": "orphan", "kind": "pods"}
    # a generated name is not known yet: upstream names the refusal after the prefix
    with pytest.raises(ApiException) as refused:
        await run(core.create_namespaced_pod, "default", {
            "metadata": {"generateName": "gen-"},
            "spec": {"serviceAccountName": "ghost",
                     "containers": [{"name": "c", "image": "busybox"}]}})
    assert json.loads(refused.value.body)["message"].startswith('pods "gen-" is forbidden')


async def test_container_mounting_the_path_keeps_its_mount(core):
    await run(core.create_namespaced_config_map, "default",
              {"metadata": {"name": "own-token"}, "data": {"token": "x"}})
    created = await run(core.create_namespaced_pod, "default", pod(
        "own", volumes=[{"name": "mine", "configMap": {"name": "own-token"}}],
        containers=[{"name": "keeps", "image": "busybox",
                     "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]},
                    {"name": "gets", "image": "busybox"}]))
    keeps, gets = created.spec.containers
    assert [(m.name, m.read_only) for m in keeps.volume_mounts] == [("mine", None)]
    assert gets.volume_mounts[0].name.startswith("kube-api-access-")
    assert [v.name for v in created.spec.volumes][0] == "mine"
    # when every container mounts the path itself, no token volume is added
    created = await run(core.create_namespaced_pod, "default", pod(
        "all-own", volumes=[{"name": "mine", "configMap": {"name": "own-token"}}],
        containers=[{"name": "c", "image": "busybox",
                     "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]))
    assert [v.name for v in created.spec.volumes] == ["mine"]


async def test_account_name_is_immutable_and_mirror_pods_are_restricted(core):
    await run(core.create_namespaced_pod, "default", pod("fixed"))
    with pytest.raises(ApiException) as refused:
        await run(core.patch_namespaced_pod, "fixed", "default",
                  {"spec": {"serviceAccountName": "robot"}})
    assert refused.value.status == 422
    assert "pod updates may not change fields" in json.loads(refused.value.body)["message"]
    mirror = pod("static-web", serviceAccountName="default")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    with pytest.raises(ApiException) as refused:
        await run(core.create_namespaced_pod, "default", mirror)
    assert json.loads(refused.value.body)["message"] == (
        'pods "static-web" is forbidden: a mirror pod may not reference service accounts')
    mirror = pod("static-web")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    created = await run(core.create_namespaced_pod, "default", mirror)
    assert created.spec.service_account_name is None and created.spec.volumes is None


async def test_kube_root_ca_configmap_in_a_new_namespace(cluster, core):
    await run(core.create_namespace, {"metadata": {"name": "fresh"}})

    async def published():
        try:
            return await run(core.read_namespaced_config_map, "kube-root-ca.crt", "fresh")
        except ApiException:
            return None

    configmap = await eventually(published, 10, what="kube-root-ca.crt in a new namespace")
    with open(cluster.ca_file) as f:
        assert configmap.data["ca.crt"] == f.read()
    # a pod right after its namespace: admission waits for the default account
    await run(core.create_namespace, {"metadata": {"name": "rushed"}})
    created = await run(core.create_namespaced_pod, "rushed", pod("early"))
    assert created.spec.service_account_name == "default"
