"""DefaultIngressClass admission against a real API server: an Ingress created without a
class gets the default IngressClass; one with a class, or the legacy annotation, is left
alone; updates are never defaulted; with several defaults the newest wins (ties by name),
as upstream since several defaults stopped being an error."""

from __future__ import annotations

from k8py.server.apiserver.defaultingressclass import IS_DEFAULT
from k8py.server.apiserver.defaultstorageclass import default_class

CLASSES = "/apis/networking.k8s.io/v1/ingressclasses"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"


def ingress_class(name: str, default: bool) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name, "annotations": {IS_DEFAULT: "true"} if default else {}},
            "spec": {"controller": f"example.com/{name}"}}


def ingress(name: str, cls: str | None = None, annotations: dict | None = None) -> dict:
    spec: dict = {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}
    if cls is not None:
        spec["ingressClassName"] = cls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


async def test_default_ingress_class(client):
    status, _ = await client.request("POST", INGRESSES, ingress("before"))
    assert status == 201
    status, created = await client.request("GET", INGRESSES + "/before")
    assert "ingressClassName" not in created["spec"]  # no default class: unchanged

    for name, default in (("zeta", True), ("other", False)):
        assert (await client.request("POST", CLASSES, ingress_class(name, default)))[0] == 201
    status, created = await client.request("POST", INGRESSES, ingress("plain"))
    assert status == 201 and created["spec"]["ingressClassName"] == "zeta"
    _, created = await client.request("POST", INGRESSES, ingress("chosen", "other"))
    assert created["spec"]["ingressClassName"] == "other"
    _, created = await client.request("POST", INGRESSES, ingress(
        "legacy", annotations={"kubernetes.io/ingress.class": "nginx"}))
    assert "ingressClassName" not in created["spec"]

    # an update is not defaulted
    _, current = await client.request("GET", INGRESSES + "/before")
    status, updated = await client.request("PUT", INGRESSES + "/before", current)
    assert status == 200 and "ingressClassName" not in updated["spec"]

    # two defaults: no error; alpha is newer than zeta or, in the same second, first by name
    assert (await client.request("POST", CLASSES, ingress_class("alpha", True)))[0] == 201
    status, created = await client.request("POST", INGRESSES, ingress("two"))
    assert status == 201 and created["spec"]["ingressClassName"] == "alpha"


def test_the_newest_default_wins_then_the_name():
    def cls(name, created, default=True):
        return {"metadata": {"name": name, "creationTimestamp": created,
                             "annotations": {IS_DEFAULT: "true" if default else "false"}}}
    classes = [cls("a", "2024-01-01T00:00:00Z"), cls("b", "2024-06-01T00:00:00Z"),
               cls("c", "2025-01-01T00:00:00Z", default=False)]
    assert default_class(classes, (IS_DEFAULT,))["metadata"]["name"] == "b"
    classes.append(cls("0", "2024-06-01T00:00:00Z"))
    assert default_class(classes, (IS_DEFAULT,))["metadata"]["name"] == "0"
    assert default_class(classes[2:3], (IS_DEFAULT,)) is None
