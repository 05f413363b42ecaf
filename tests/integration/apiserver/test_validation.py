"""Upstream's validation rules for the built-in kinds, as 422 Invalid with causes."""

from __future__ import annotations

import pytest

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
SERVICES = "/api/v1/namespaces/default/services"
CM = "/api/v1/namespaces/default/configmaps"


def pod(name="p", **spec):
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


@pytest.mark.parametrize("path, body, fields", [
    (PODS, {"metadata": {"name": "p"}, "spec": {}}, ["spec.containers"]),
    (PODS, pod(containers=[{"name": "c"}]), ["spec.containers[0].image"]),
    (PODS, pod(containers=[{"name": "Bad", "image": "x"}, {"name": "d", "image": "x",
                                                          "ports": [{"containerPort": 70000,
                                                                     "protocol": "XTP"}]}]),
     ["spec.containers[0].name", "spec.containers[1].ports[0].containerPort",
      "spec.containers[1].ports[0].protocol"]),
    (PODS, pod(restartPolicy="Sometimes"), ["spec.restartPolicy"]),
    (DEPLOYMENTS, {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "b"}},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}},
     ["spec.template.metadata.labels"]),
    (DEPLOYMENTS, {"metadata": {"name": "d"}, "spec": {"replicas": -1}},
     ["spec.replicas", "spec.selector", "spec.template.spec"]),
    (SERVICES, {"metadata": {"name": "s"}, "spec": {"type": "Magic", "ports": [{"port": 0}]}},
     ["spec.type", "spec.ports[0].port", "spec.ports[0].targetPort"]),
    (SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80},
                                                              {"port": 81}]}},
     ["spec.ports[0].name", "spec.ports[1].name"]),
    (CM, {"metadata": {"name": "c"}, "data": {"bad key!": "x"}}, ["data[bad key!]"]),
])
async def test_invalid_objects_name_their_fields(client, path, body, fields):
    status, err = await client.request("POST", path, body)
    assert status == 422, err
    assert err["reason"] == "Invalid"
    assert sorted(c["field"] for c in err["details"]["causes"]) == sorted(fields)


async def test_running_pod_spec_is_immutable_but_image_is_not(client):
    _, created = await client.request("POST", PODS, pod())
    changed = {**created, "spec": {**created["spec"], "restartPolicy": "Never"}}
    status, err = await client.request("PUT", f"{PODS}/p", changed)
    assert status == 422 and "pod updates may not change fields" in err["message"]
    container = {**created["spec"]["containers"][0], "image": "busybox:2"}
    new_image = {**created, "spec": {**created["spec"], "containers": [container]}}
    status, _ = await client.request("PUT", f"{PODS}/p", new_image)
    assert status == 200


async def test_immutable_selector_and_configmap(client):
    template = {"metadata": {"labels": {"app": "a", "v": "1"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}
    _, d = await client.request("POST", DEPLOYMENTS, {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "a"}}, "template": template}})
    status, err = await client.request(
        "PATCH", f"{DEPLOYMENTS}/d", {"spec": {"selector": {"matchLabels": {"v": "1"}}}},
        content_type="application/merge-patch+json")
    assert status == 422 and err["details"]["causes"][0]["field"] == "spec.selector"
    await client.request("POST", CM, {"metadata": {"name": "frozen"}, "data": {"a": "1"},
                                      "immutable": True})
    status, err = await client.request("PATCH", f"{CM}/frozen", {"data": {"a": "2"}},
                                       content_type="application/merge-patch+json")
    assert status == 422 and "immutable" in err["message"]


NETPOLS = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"


def netpol(**spec):
    return {"metadata": {"name": "np"}, "spec": {"podSelector": {}, **spec}}


@pytest.mark.parametrize("spec, causes", [
    ({"ingress": [{"ports": [{"port": 80, "endPort": 70}, {"port": "http", "endPort": 90},
                             {"endPort": 90}, {"port": "Not_A-Name"}, {"protocol": "ICMP"}]}]},
     {"spec.ingress[0].ports[0].endPort":
      "Invalid value: 80: must be greater than or equal to `port`",
      "spec.ingress[0].ports[1].endPort":
      "Invalid value: 90: may not be specified when `port` is non-numeric",
      "spec.ingress[0].ports[2].endPort":
      "Invalid value: 90: may not be specified when `port` is not specified",
      "spec.ingress[0].ports[3].port": 'Invalid value: "Not_A-Name": must contain only '
                                       "alpha-numeric characters (a-z, 0-9), and hyphens (-)",
      "spec.ingress[0].ports[4].protocol":
      'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'}),
    ({"egress": [{"to": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                         {"ipBlock": {"cidr": "10.0.0.0/8",
                                      "except": ["192.168.0.0/16", "10.0.0.0/8"]}},
                         {"ipBlock": {"cidr": "not-a-cidr"}}]}]},
     {"spec.egress[0].to[0]": "Required value: must specify a peer",
      "spec.egress[0].to[1]": "Forbidden: may not specify both ipBlock and another peer",
      "spec.egress[0].to[2].ipBlock.except[0]":
      'Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`',
      "spec.egress[0].to[2].ipBlock.except[1]":
      'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
      "spec.egress[0].to[3].ipBlock.cidr": 'Invalid value: "not-a-cidr": not a valid CIDR'}),
    ({"policyTypes": ["Ingress", "Sideways"],
      "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     {"spec.policyTypes[1]": 'Unsupported value: "Sideways": supported values: "Ingress", '
                             '"Egress"',
      "spec.podSelector.matchExpressions[0].values":
      "Required value: must be specified when `operator` is 'In' or 'NotIn'"}),
])
async def test_invalid_network_policies(client, spec, causes):
    status, err = await client.request("POST", NETPOLS, netpol(**spec))
    assert status == 422, err
    assert {c["field"]: c["message"] for c in err["details"]["causes"]} == causes


async def test_network_policies_get_upstreams_defaults(client):
    status, created = await client.request("POST", NETPOLS, netpol(
        egress=[{"ports": [{"port": 53}]}], ingress=[{"from": [{"podSelector": {}}]}]))
    assert status == 201, created
    assert created["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert created["spec"]["egress"][0]["ports"] == [{"port": 53, "protocol": "TCP"}]


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
async def test_the_system_namespaces_may_not_be_deleted(client, name):
    status, err = await client.request("DELETE", f"/api/v1/namespaces/{name}")
    assert status == 403, err
    assert (err["reason"], err["message"]) == (
        "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
    status, _ = await client.request("GET", f"/api/v1/namespaces/{name}")
    assert status == 200
