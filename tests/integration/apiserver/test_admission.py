"""Every write passes the admission chain, in its two phases: creates, updates, patches,
status, scale, binding, eviction and deletes; a plugin that refuses stops the write, and a
mutating plugin's change is what is stored."""

from __future__ import annotations

import pytest

from k8py.api import errors
from k8py.server.apiserver import app as apiserver

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                       "template": {"metadata": {"labels": {"app": "d"}},
                                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


class Recorder:
    name = "recorder"

    def __init__(self):
        self.admitted: list[tuple[str, str, str | None]] = []
        self.validated: list[tuple[str, str, str | None]] = []

    async def admit(self, attributes):
        self.admitted.append((attributes.operation, attributes.resource.plural,
                              attributes.subresource))
        obj = attributes.object
        if attributes.operation == "CREATE" and attributes.resource.plural == "configmaps":
            return {**obj, "metadata": {**obj["metadata"], "labels": {"admitted": "yes"}}}
        return None

    async def validate(self, attributes):
        self.validated.append((attributes.operation, attributes.resource.plural,
                               attributes.subresource))
        if (attributes.object or {}).get("metadata", {}).get("name") == "forbidden":
            raise errors.Forbidden('configmaps "forbidden" is forbidden: refused by recorder')


@pytest.fixture
def recorder(server):
    plugin = Recorder()
    server.app[apiserver.REST_KEY].store.admission.plugins.append(plugin)
    return plugin


async def test_every_write_passes_both_phases(client, recorder):
    ns = "/api/v1/namespaces/default"
    status, created = await client.request("POST", ns + "/configmaps",
                                           {"metadata": {"name": "cm"}})
    assert status == 201 and created["metadata"]["labels"] == {"admitted": "yes"}
    assert (await client.request("PUT", ns + "/configmaps/cm", {
        **created, "data": {"a": "b"}}))[0] == 200
    assert (await client.request("PATCH", ns + "/configmaps/cm", {"data": {"a": "c"}},
                                 content_type="application/merge-patch+json"))[0] == 200
    assert (await client.request("POST", ns + "/pods", POD))[0] == 201
    assert (await client.request("PATCH", ns + "/pods/p/status",
                                 {"status": {"message": "hi"}},
                                 content_type="application/merge-patch+json"))[0] == 200
    assert (await client.request("POST", ns + "/pods/p/binding", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": "n1"}}))[0] == 201
    assert (await client.request("POST", "/apis/apps/v1/namespaces/default/deployments",
                                 DEPLOYMENT))[0] == 201
    assert (await client.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/d/scale",
                                 {"spec": {"replicas": 2}},
                                 content_type="application/merge-patch+json"))[0] == 200
    assert (await client.request("POST", ns + "/pods/p/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}))[0] == 201
    assert (await client.request("DELETE", ns + "/configmaps/cm"))[0] == 200
    expected = [("CREATE", "configmaps", None), ("UPDATE", "configmaps", None),
                ("UPDATE", "configmaps", None), ("CREATE", "pods", None),
                ("UPDATE", "pods", "status"), ("CREATE", "pods", "binding"),
                ("CREATE", "deployments", None), ("UPDATE", "deployments", "scale"),
                ("CREATE", "pods", "eviction"), ("DELETE", "pods", "eviction"),
                ("DELETE", "configmaps", None)]
    for call in expected:
        assert call in recorder.admitted, call
        assert call in recorder.validated, call


async def test_a_refusal_stops_the_write(client, recorder):
    status, body = await client.request("POST", "/api/v1/namespaces/default/configmaps",
                                        {"metadata": {"name": "forbidden"}})
    assert status == 403 and body["reason"] == "Forbidden"
    status, _ = await client.request("GET", "/api/v1/namespaces/default/configmaps/forbidden")
    assert status == 404
