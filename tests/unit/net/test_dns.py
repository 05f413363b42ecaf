"""Cluster DNS answers, from a view of Services, EndpointSlices and Nodes: the Kubernetes DNS
specification's records, NXDOMAIN and NODATA with the SOA, and what is forwarded."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from k8py.net import dns as cluster_dns

DOMAIN = "cluster.local"


def svc(name, ns="default", ip="10.43.0.20", **spec):
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80,
                                                 "protocol": "TCP"}], **spec}}


def endpoints(service, *items, ns="default"):
    return {"metadata": {"namespace": ns, "name": f"{service}-x",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           **({"hostname": host} if host else {})}
                          for ip, host, ready in items]}


@pytest.fixture
def view():
    return cluster_dns.ClusterView(DOMAIN, [
        svc("web"),
        svc("db", ip="None"),
        svc("empty", ip="None"),
        svc("alias", ip=None, type="ExternalName", externalName="example.com"),
    ], [
        endpoints("db", ("10.42.1.5", "db-0", True), ("10.42.2.6", "db-1", True),
                  ("10.42.3.7", "db-2", False)),
        endpoints("empty", ("10.42.1.9", "", False)),
    ], [{"metadata": {"name": "agent-1"},
         "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.3"}]}}])


def ask(view, name, rdtype="A"):
    query = dns.message.make_query(name, rdtype)
    response = cluster_dns.respond(view, query)
    if response is None:
        return None
    return (dns.rcode.to_text(response.rcode()),
            sorted(r.to_text() for rrset in response.answer for r in rrset),
            [rrset.rdtype for rrset in response.authority])


def test_service_records(view):
    assert ask(view, "web.default.svc.cluster.local") == ("NOERROR", ["10.43.0.20"], [])
    assert ask(view, "WEB.Default.svc.cluster.local.") == ("NOERROR", ["10.43.0.20"], [])
    assert ask(view, "db.default.svc.cluster.local")[1] == ["10.42.1.5", "10.42.2.6"]
    assert ask(view, "db-0.db.default.svc.cluster.local")[1] == ["10.42.1.5"]
    assert ask(view, "_http._tcp.web.default.svc.cluster.local", "SRV")[1] == [
        "0 100 80 web.default.svc.cluster.local."]
    assert ask(view, "alias.default.svc.cluster.local")[1] == ["example.com."]
    assert ask(view, "10-42-0-5.default.pod.cluster.local")[1] == ["10.42.0.5"]
    assert ask(view, "20.0.43.10.in-addr.arpa", "PTR")[1] == [
        "web.default.svc.cluster.local."]
    assert ask(view, "5.1.42.10.in-addr.arpa", "PTR")[1] == [
        "db-0.db.default.svc.cluster.local."]
    assert ask(view, "dns-version.cluster.local", "TXT")[1] == ['"1.1.0"']
    assert ask(view, "agent-1")[1] == ["172.30.0.3"]


def test_missing_names_and_types(view):
    soa = [dns.rdatatype.SOA]
    assert ask(view, "nope.default.svc.cluster.local") == ("NXDOMAIN", [], soa)
    assert ask(view, "empty.default.svc.cluster.local") == ("NXDOMAIN", [], soa)
    assert ask(view, "web.default.svc.cluster.local", "AAAA") == ("NOERROR", [], soa)
    # a search-path miss (ndots:5) is ours: answered here, never forwarded
    assert ask(view, "example.com.default.svc.cluster.local") == ("NXDOMAIN", [], soa)
    assert ask(view, "default.svc.cluster.local") == ("NOERROR", [], soa)


def test_other_names_are_forwarded(view):
    assert ask(view, "example.com") is None
    assert ask(view, "1.2.3.4.in-addr.arpa", "PTR") is None


def test_answers_are_kept_per_question_until_the_view_changes(view):
    current = [view]
    server = cluster_dns.DnsServer("127.0.0.1", lambda: current[0],
                                   cluster_dns.Forwarder([], set()))

    def reply_to(name, query_id, limit=None, rdtype="A"):
        query = dns.message.make_query(name, rdtype)
        query.id = query_id
        return server.answer(query.to_wire(), limit)

    first = dns.message.from_wire(reply_to("web.default.svc.cluster.local", 1))
    again = dns.message.from_wire(reply_to("web.default.svc.cluster.local", 2))
    assert (first.id, again.id) == (1, 2)  # the kept answer carries the new query's ID
    assert first.answer == again.answer and first.answer[0][0].address == "10.43.0.20"
    current[0] = cluster_dns.ClusterView(DOMAIN, [svc("web", ip="10.43.0.99")], [], [])
    changed = dns.message.from_wire(reply_to("web.default.svc.cluster.local", 3))
    assert changed.answer[0][0].address == "10.43.0.99"
    # not ours: the parsed query, to forward; not DNS at all: nothing
    assert isinstance(reply_to("example.com", 4), dns.message.Message)
    assert server.answer(b"\x00\x01garbage", None) is None


def test_large_udp_answers_are_truncated_and_whole_over_tcp():
    many = [(f"10.42.{i // 200}.{i % 200 + 2}", "", True) for i in range(100)]
    view = cluster_dns.ClusterView(DOMAIN, [svc("big", ip="None")],
                                   [endpoints("big", *many)], [])
    server = cluster_dns.DnsServer("127.0.0.1", lambda: view, cluster_dns.Forwarder([], set()))
    query = dns.message.make_query("big.default.svc.cluster.local", "A").to_wire()
    udp = dns.message.from_wire(server.answer(query, None))
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = dns.message.from_wire(server.answer(query, 65535))
    assert len(tcp.answer[0]) == 100
