"""CustomResourceDefinitions and the custom resources they define."""

from __future__ import annotations

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "shortNames": ["wd"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "color": {"type": "string", "enum": ["red", "blue"]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }},
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            }}},
        }],
    },
}


def widget(name, **spec):
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": spec}


async def test_crd_lifecycle(client):
    status, crd = await client.request("POST", CRDS, CRD)
    assert status == 201, crd
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    status, discovery = await client.request("GET", "/apis/example.com/v1")
    assert status == 200
    assert [r["name"] for r in discovery["resources"]] == ["widgets", "widgets/status"]
    status, groups = await client.request("GET", "/apis")
    assert "example.com" in [g["name"] for g in groups["groups"]]

    status, created = await client.request("POST", WIDGETS, widget(
        "w1", size=2, color="red", free={"any": {"thing": 1}}))
    assert status == 201 and created["metadata"]["generation"] == 1
    assert created["spec"]["free"] == {"any": {"thing": 1}}

    status, err = await client.request("POST", WIDGETS, widget("bad", size=0, color="green"))
    assert status == 422 and err["reason"] == "Invalid"
    fields = sorted(c["field"] for c in err["details"]["causes"])
    assert fields == ["spec.color", "spec.size"]
    assert "should be greater than or equal to 1" in err["message"]
    status, err = await client.request("POST", WIDGETS, {**widget("bad"), "spec": {}})
    assert status == 422 and err["details"]["causes"][0]["field"] == "spec.size"
    status, err = await client.request("POST", WIDGETS, widget("bad", size="two"))
    assert status == 422 and "must be of type integer" in err["message"]

    status, err = await client.request("POST", WIDGETS, widget("w2", size=1, extra=1),
                                       fieldValidation="Strict")
    assert status == 400 and 'unknown field "spec.extra"' in err["message"]
    status, pruned = await client.request("POST", WIDGETS, widget("w2", size=1, extra=1))
    assert status == 201 and "extra" not in pruned["spec"]

    # The status subresource: spec changes bump generation, status changes go through /status.
    status, patched = await client.request(
        "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 3}, "status": {"ready": True}},
        content_type="application/merge-patch+json")
    assert patched["metadata"]["generation"] == 2 and "status" not in patched
    status, patched = await client.request(
        "PATCH", f"{WIDGETS}/w1/status", {"status": {"ready": True}},
        content_type="application/merge-patch+json")
    assert status == 200 and patched["status"] == {"ready": True}
    status, _ = await client.request(
        "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 4}},
        content_type="application/strategic-merge-patch+json")
    assert status == 415, "upstream has no strategic merge patch for custom resources"

    status, listed = await client.request("GET", WIDGETS)
    assert [w["metadata"]["name"] for w in listed["items"]] == ["w1", "w2"]
    assert listed["kind"] == "WidgetList"

    status, _ = await client.request("DELETE", f"{CRDS}/widgets.example.com")
    assert status == 200
    status, _ = await client.request("GET", WIDGETS)
    assert status == 404
    status, _ = await client.request("POST", CRDS, CRD)  # defining it again starts empty
    status, listed = await client.request("GET", WIDGETS)
    assert status == 200 and listed["items"] == []


async def test_bad_crds_are_invalid(client):
    bad = {**CRD, "metadata": {"name": "wrong.example.com"}}
    status, err = await client.request("POST", CRDS, bad)
    assert status == 422 and err["details"]["causes"][0]["field"] == "metadata.name"
    no_schema = {**CRD, "spec": {**CRD["spec"], "versions": [
        {"name": "v1", "served": True, "storage": True}]}}
    status, err = await client.request("POST", CRDS, no_schema)
    assert status == 422
