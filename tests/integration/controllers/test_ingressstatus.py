"""The Ingresses of the built-in controller get the nodes' addresses as status (the
IngressClass `k8py`, default, the packaged ingress add-on); other classes' Ingresses are left alone."""

from __future__ import annotations

from k8py.api.resources import builtin
from tests.conftest import eventually

INGRESSES = builtin("networking.k8s.io/v1", "ingresses")
CLASSES = builtin("networking.k8s.io/v1", "ingressclasses")


def ingress(name: str, cls: str | None = None, tls: bool = False) -> dict:
    spec: dict = {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}
    if cls:
        spec["ingressClassName"] = cls
    if tls:
        spec["tls"] = [{"hosts": ["a.example.com"], "secretName": "a-tls"}]
    return {"metadata": {"name": name}, "spec": spec}


async def test_ingress_status_lists_the_nodes(cluster):
    client = cluster.client
    k8py_class = await client.get(CLASSES, "k8py")
    assert k8py_class["spec"]["controller"] == "k8py.io/ingress"
    assert k8py_class["metadata"]["annotations"][
        "ingressclass.kubernetes.io/is-default-class"] == "true"
    nodes = (await client.list(builtin("v1", "nodes")))["items"]
    addresses = sorted({a["address"] for n in nodes for a in n["status"].get("addresses") or ()
                        if a["type"] == "InternalIP"},
                       key=lambda ip: tuple(int(x) for x in ip.split(".")))
    await client.create(INGRESSES, ingress("plain"), "default")
    await client.create(INGRESSES, ingress("secure", "k8py", tls=True), "default")
    await client.create(INGRESSES, ingress("theirs", "nginx"), "default")

    async def status(name):
        item = await client.get(INGRESSES, name, "default")
        return ((item.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []

    plain = await eventually(lambda: status("plain"), 10, what="plain's status")
    assert [i["ip"] for i in plain] == addresses
    assert plain[0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    secure = await eventually(lambda: status("secure"), 10, what="secure's status")
    assert secure[0]["ports"] == [{"port": 80, "protocol": "TCP"},
                                  {"port": 443, "protocol": "TCP"}]
    assert await status("theirs") == []
    # moved to another class: the status goes
    await client.patch(INGRESSES, "plain", {"spec": {"ingressClassName": "nginx"}}, "default")

    async def cleared():
        return await status("plain") == []
    await eventually(cleared, 10, what="plain's status cleared")
