"""The Service proxy's ruleset is a pure function of Services and EndpointSlices: golden
files hold the exact nft scripts (regenerate with K8PY_UPDATE_GOLDEN=1 and read the diff),
and the endpoint rules are checked case by case."""

from __future__ import annotations

import os

import pytest

from k8py.net import nftscript, servicerules
from k8py.net.servicerules import Endpoint

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CIDR = "10.42.0.0/16"


def service(name, *, type_="ClusterIP", ip="10.43.0.20", ports=None, **spec):
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"type": type_, "clusterIP": ip, "clusterIPs": [ip] if ip != "None" else [],
                     "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP",
                                         "targetPort": 8080}], **spec}}


def endpoint_slice(service_name, *endpoints, port=8080, name="http", protocol="TCP"):
    return {"metadata": {"namespace": "default", "name": f"{service_name}-abcde",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "ports": [{"name": name, "port": port, "protocol": protocol}],
            "endpoints": [{"addresses": [ip], "conditions": conditions}
                          for ip, conditions in endpoints]}


READY = {"ready": True, "serving": True, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}
GONE = {"ready": False, "serving": False, "terminating": True}


def check_golden(name: str, script: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("K8PY_UPDATE_GOLDEN"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
    with open(path, encoding="utf-8") as f:
        assert script == f.read(), f"{name} differs: K8PY_UPDATE_GOLDEN=1 rewrites it"


def test_cluster_ip_node_port_affinity_and_no_endpoints():
    services = [
        service("web", type_="NodePort", sessionAffinity="ClientIP",
                ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                        "nodePort": 30080}]),
        service("dns", ip="10.43.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
        service("empty", ip="10.43.0.30", type_="NodePort",
                ports=[{"port": 81, "protocol": "TCP", "nodePort": 30081}]),
        service("lb", ip="10.43.0.40", type_="LoadBalancer", externalIPs=["192.0.2.10"],
                ports=[{"name": "https", "port": 443, "protocol": "TCP", "nodePort": 30443}],
                status=None),
        service("headless", ip="None"),
        {"metadata": {"namespace": "default", "name": "alias"},
         "spec": {"type": "ExternalName", "externalName": "example.com"}},
    ]
    services[3]["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.2"}]}}
    slices = [endpoint_slice("web", ("10.42.1.5", READY), ("10.42.2.6", READY)),
              endpoint_slice("dns", ("10.42.0.9", READY), port=53, name="dns",
                             protocol="UDP"),
              endpoint_slice("lb", ("10.42.1.7", READY), port=8443, name="https")]
    script = servicerules.ruleset(servicerules.service_ports(services, slices), CIDR)
    check_golden("mixed.nft", script)


def test_an_empty_cluster_still_has_the_base_chains():
    check_golden("empty.nft", servicerules.ruleset([], CIDR))


@pytest.mark.parametrize("endpoints,expected", [
    ([("10.42.0.1", READY), ("10.42.0.2", TERMINATING)], ["10.42.0.1"]),
    ([("10.42.0.2", TERMINATING), ("10.42.0.3", GONE)], ["10.42.0.2"]),  # fallback
    ([("10.42.0.3", GONE)], []),
    ([("10.42.0.4", {})], ["10.42.0.4"]),  # no conditions: ready, as upstream reads it
])
def test_which_endpoints_serve(endpoints, expected):
    [port] = servicerules.service_ports([service("web")],
                                        [endpoint_slice("web", *endpoints)])
    assert [e.ip for e in port.endpoints] == expected


def test_endpoints_come_from_the_matching_port_and_protocol():
    slices = [endpoint_slice("web", ("10.42.0.1", READY), name="other"),
              endpoint_slice("web", ("10.42.0.2", READY), protocol="UDP"),
              endpoint_slice("web", ("10.42.0.3", READY), port=9090)]
    [port] = servicerules.service_ports([service("web")], slices)
    assert port.endpoints == (Endpoint("10.42.0.3", 9090),)


def test_the_removal_script_names_only_our_table():
    assert servicerules.removal() == "table ip k8py {}\ndelete table ip k8py\n"


def _local_slice(service_name):
    item = endpoint_slice(service_name, ("10.42.1.5", READY), ("10.42.2.6", READY))
    item["endpoints"][0]["nodeName"] = "node-1"
    item["endpoints"][1]["nodeName"] = "node-2"
    return item


def test_traffic_policies_local_on_a_node_with_and_without_endpoints():
    services = [
        service("kept", type_="NodePort", externalTrafficPolicy="Local",
                ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]),
        service("near", ip="10.43.0.21", internalTrafficPolicy="Local")]
    slices = [_local_slice("kept"), _local_slice("near")]
    ports = servicerules.service_ports(services, slices)
    on_1 = servicerules.build(ports, CIDR, "node-1")
    assert on_1.chains["local-default-kept-http-tcp"] == (
        "goto ep-default-kept-http-tcp-10.42.1.5-8080",)
    ext = on_1.chains["ext-default-kept-http-tcp"]
    assert ext[0] == f"ip saddr {CIDR} goto svc-default-kept-http-tcp"
    assert "jump mark-for-masquerade" not in ext  # the client's address is kept
    assert on_1.chains["svc-default-near-http-tcp"][-1] == \
        "goto ep-default-near-http-tcp-10.42.1.5-8080"
    on_3 = servicerules.build(ports, CIDR, "node-3")
    assert on_3.chains["local-default-kept-http-tcp"] == ("drop",)
    assert on_3.chains["svc-default-near-http-tcp"][-1] == "drop"
    check_golden("local.nft", nftscript.full(on_1))


def test_stale_udp_flows_are_the_removed_endpoints():
    dns = service("dns", ip="10.43.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
    before = servicerules.service_ports([dns], [endpoint_slice(
        "dns", ("10.42.0.9", READY), ("10.42.0.8", READY), port=53, name="dns",
        protocol="UDP")])
    after = servicerules.service_ports([dns], [endpoint_slice(
        "dns", ("10.42.0.8", READY), port=53, name="dns", protocol="UDP")])
    assert servicerules.stale_udp(before, after) == {("10.43.0.10", "10.42.0.9", 53)}
    assert servicerules.stale_udp(before, []) == {("10.43.0.10", "10.42.0.9", 53),
                                                  ("10.43.0.10", "10.42.0.8", 53)}
    web = servicerules.service_ports([service("web")],
                                     [endpoint_slice("web", ("10.42.0.1", READY))])
    assert servicerules.stale_udp(web, []) == set()  # TCP: conntrack ends with the flow
