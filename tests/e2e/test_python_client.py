"""The official Python client, unchanged, against k8py: create, list, watch, patch, delete."""

from __future__ import annotations

import threading

from kubernetes import client, config, watch


def api(cluster) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=cluster.kubeconfig))


def test_configmap_lifecycle(cluster):
    core = api(cluster)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "py"}),
                              data={"k": "v"})
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.data == {"k": "v"}
    listed = core.list_namespaced_config_map("default", label_selector="from=py")
    assert [c.metadata.name for c in listed.items] == ["py"]

    events = []
    w = watch.Watch()

    def consume():
        for event in w.stream(core.list_namespaced_config_map, "default",
                              resource_version=listed.metadata.resource_version,
                              timeout_seconds=20):
            events.append((event["type"], event["object"].metadata.name,
                           (event["object"].data or {}).get("k")))
            if len(events) == 2:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    patched = core.patch_namespaced_config_map("py", "default", {"data": {"k": "v2"}})
    assert patched.data == {"k": "v2"}
    core.delete_namespaced_config_map("py", "default")
    thread.join(30)
    assert events == [("MODIFIED", "py", "v2"), ("DELETED", "py", "v2")]

    try:
        core.read_namespaced_config_map("py", "default")
        raise AssertionError("still there")
    except client.ApiException as exc:
        assert exc.status == 404
