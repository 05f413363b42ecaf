"""The Ingresses of the built-in controller get as status the addresses of the nodes that
announce running it (the IngressClass `k8py`, default, the packaged ingress add-on); other
classes' Ingresses are left alone; a LoadBalancer Service asking for the ingress's port gets
only the other nodes' addresses, or stays pending."""

from __future__ import annotations

from k8py.api.resources import builtin
from k8py.net.ingress import PORTS_ANNOTATION, announce
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
    for node in nodes:  # what each agent's ingress says once it listens
        await announce(client, node["metadata"]["name"], {"http": 80, "https": 443})
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


async def test_only_nodes_running_the_ingress_and_its_ports_kept_from_load_balancers(cluster):
    client = cluster.client
    nodes = sorted((await client.list(builtin("v1", "nodes")))["items"],
                   key=lambda n: n["metadata"]["name"])
    assert len(nodes) >= 2
    running, other = nodes[0], nodes[1]
    address = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"]
                                           if a["type"] == "InternalIP") for n in nodes}
    await announce(client, running["metadata"]["name"], {"http": 80, "https": 443})
    await client.create(INGRESSES, ingress("only"), "default")

    async def status(name):
        item = await client.get(INGRESSES, name, "default")
        return ((item.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    listed = await eventually(lambda: status("only"), 10, what="only's status")
    assert [i["ip"] for i in listed] == [address[running["metadata"]["name"]]]

    # a LoadBalancer on 443: not on the node whose ingress holds it
    services = builtin("v1", "services")
    await client.create(services, {"metadata": {"name": "lb443"}, "spec": {
        "type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 8443}]}}, "default")

    async def lb_ips():
        svc = await client.get(services, "lb443", "default")
        return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get(
            "ingress") or []]
    ips = await eventually(lb_ips, 10, what="lb443's addresses")
    assert address[running["metadata"]["name"]] not in ips
    assert address[other["metadata"]["name"]] in ips

    # every node runs the ingress: pending, with an Event saying why
    for node in nodes:
        await announce(client, node["metadata"]["name"], {"http": 80, "https": 443})

    async def pending():
        return await lb_ips() == []
    await eventually(pending, 10, what="lb443 pending")
    events = (await client.list(builtin("v1", "events"), "default"))["items"]
    assert any(e["reason"] == "PortInUse" and "ingress controller" in e["message"]
               for e in events)

    # the ingress stops on a node: it leaves the Ingress's status
    await announce(client, running["metadata"]["name"], None)
    node = await client.get(builtin("v1", "nodes"), running["metadata"]["name"])
    assert PORTS_ANNOTATION not in (node["metadata"].get("annotations") or {})

    async def gone():
        return address[running["metadata"]["name"]] not in [i["ip"] for i in
                                                              await status("only")]
    await eventually(gone, 10, what="the stopped node out of the status")
