"""OpenAPI documents and field validation."""

from __future__ import annotations

CM = "/api/v1/namespaces/default/configmaps"


async def test_v3_root_and_documents(client):
    status, root = await client.request("GET", "/openapi/v3")
    assert status == 200
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1"} <= set(root["paths"])
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    status, doc = await client.request("GET", url.split("?")[0])
    assert doc["openapi"].startswith("3.")
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps", "kind": "Deployment", "version": "v1"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][2].items()
    deployment = doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    spec_ref = deployment["properties"]["spec"]["$ref"]
    assert spec_ref == "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    assert "io.k8s.api.core.v1.PodSpec" in doc["components"]["schemas"]
    status, _ = await client.request("GET", "/openapi/v3/apis/nope/v1")
    assert status == 404


async def test_v2_document(client):
    status, doc = await client.request("GET", "/openapi/v2")
    assert status == 200 and doc["swagger"] == "2.0"
    assert "io.k8s.api.core.v1.Pod" in doc["definitions"]


async def test_unknown_fields_strict_warn_ignore(client):
    body = {"metadata": {"name": "u", "bogus": 1}, "data": {"a": "b"}, "extra": True}
    status, err = await client.request("POST", CM, body, fieldValidation="Strict")
    assert status == 400 and err["reason"] == "BadRequest"
    assert err["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                              'strict decoding error: unknown field "metadata.bogus", '
                              'unknown field "extra"')
    async with client.session.post(client.server.url + CM, json=body) as r:  # Warn: default
        assert r.status == 201
        warnings = r.headers.getall("Warning")
        assert warnings == ['299 - "unknown field \\"metadata.bogus\\""',
                            '299 - "unknown field \\"extra\\""']
        stored = await r.json()
    assert "extra" not in stored and "bogus" not in stored["metadata"]
    status, _ = await client.request("POST", CM, {**body, "metadata": {"name": "v"}},
                                     fieldValidation="Ignore")
    assert status == 201
    status, _ = await client.request("POST", CM, body, fieldValidation="Sometimes")
    assert status == 400
    status, err = await client.request(
        "PATCH", f"{CM}/u", {"spec": {"x": 1}}, content_type="application/merge-patch+json",
        fieldValidation="Strict")
    assert status == 422 and 'unknown field "spec"' in err["message"]
