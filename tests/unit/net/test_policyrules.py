"""NetworkPolicy rules are a pure function of (policies, pods, namespaces, node): a golden file
holds the exact nft script of a policy that uses every kind of peer and port (regenerate
with K8PY_UPDATE_GOLDEN=1 and read the diff), and the semantics are checked case by case
on the rules as data. tests/e2e/test_policy_rules.py loads them into a kernel;
tests/e2e/test_lab.py probes them with real traffic."""

from __future__ import annotations

from k8py.net import nftscript, policyrules
from tests.unit.net.test_servicerules import check_golden

NODE = "node-1"


def pod(namespace, name, ip, node=NODE, labels=None, ports=(), **spec):
    return {"metadata": {"namespace": namespace, "name": name,
                         "labels": labels if labels is not None else {"pod": name}},
            "spec": {"nodeName": node, **spec, "containers": [{"name": "c", "ports": [
                {"name": port_name, "containerPort": number, "protocol": protocol}
                for port_name, number, protocol in ports]}]},
            "status": {"phase": "Running", "podIP": ip} if ip else {"phase": "Pending"}}


def namespace(name, **labels):
    return {"metadata": {"name": name,
                         "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def policy(namespace_, name, pod_selector=None, ingress=None, egress=None, types=None):
    spec = {"podSelector": pod_selector or {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"namespace": namespace_, "name": name}, "spec": spec}


NAMESPACES = [namespace("x", team="a"), namespace("y", team="b"), namespace("z", team="b")]
PODS = [
    pod("x", "a", "10.42.0.2", ports=[("serve-80", 80, "TCP"), ("dns", 53, "UDP")]),
    pod("x", "b", "10.42.1.3", node="node-2", ports=[("serve-80", 8080, "TCP")]),
    pod("x", "c", "10.42.0.5"),
    pod("y", "a", "10.42.0.4"),
    pod("y", "b", "10.42.1.6", node="node-2"),
    pod("z", "a", "10.42.1.7", node="node-2"),
    pod("x", "host", "192.0.2.1", hostNetwork=True),
    pod("x", "pending", None),
]


def build(*policies, pods=PODS, node=NODE):
    return policyrules.build(policies, pods, NAMESPACES, node)


def elements(table, name):
    return table.sets[name].elements


def test_golden_every_peer_and_port_kind():
    table = build(
        policy("x", "deny-all", types=["Ingress", "Egress"]),
        policy("x", "web", {"matchLabels": {"pod": "a"}}, ingress=[{
            "from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                      "podSelector": {"matchLabels": {"pod": "a"}}},
                     {"podSelector": {"matchLabels": {"pod": "c"}}},
                     {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
            "ports": [{"protocol": "TCP", "port": "serve-80"},
                      {"protocol": "UDP", "port": 81, "endPort": 90},
                      {"protocol": "SCTP", "port": 82}]}],
            egress=[{"to": [{"namespaceSelector": {}}],
                     "ports": [{"protocol": "TCP", "port": "serve-80"}]},
                    {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP"}]}]))
    check_golden("policy.nft", nftscript.full(table))


def test_default_deny_isolates_this_nodes_pods_with_nothing_to_visit():
    table = build(policy("x", "deny"))
    ingress = dict(e.split(" : ") for e in elements(table, "ingress-pods"))
    # x/b runs on node-2 (enforced there); host-network and pending pods are never isolated
    assert ingress == {"10.42.0.2": "goto ingress-pod-10.42.0.2",
                       "10.42.0.5": "goto ingress-pod-10.42.0.5"}
    assert elements(table, "egress-pods") == ()  # policyTypes defaults to Ingress only
    assert table.chains == {"ingress-pod-10.42.0.2": ("goto deny",),
                            "ingress-pod-10.42.0.5": ("goto deny",)}


def test_a_connection_visits_only_the_policies_that_select_its_pod():
    allow = [{"from": [{"podSelector": {}}]}]
    table = build(policy("x", "for-a", {"matchLabels": {"pod": "a"}}, ingress=allow),
                  policy("x", "for-c", {"matchLabels": {"pod": "c"}}, ingress=allow),
                  policy("x", "for-all", ingress=allow),
                  policy("y", "elsewhere", {"matchLabels": {"pod": "b"}}, ingress=allow))
    assert table.chains["ingress-pod-10.42.0.2"] == (
        "jump ingress_x_for-a", "jump ingress_x_for-all", "goto deny")
    assert table.chains["ingress-pod-10.42.0.5"] == (
        "jump ingress_x_for-all", "jump ingress_x_for-c", "goto deny")
    # y/b runs on node-2: its policy is not held here at all
    assert not [name for name in list(table.chains) + list(table.sets) if "elsewhere" in name]


def test_policy_types_default_to_egress_too_when_there_are_egress_rules():
    table = build(policy("y", "out", egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}]))
    assert [e.split(" : ")[0] for e in elements(table, "egress-pods")] == ["10.42.0.4"]
    assert [e.split(" : ")[0] for e in elements(table, "ingress-pods")] == ["10.42.0.4"]
    assert table.chains["egress_y_out"] == ("meta l4proto udp th dport 53 accept",)


def test_peers_pod_selector_namespace_selector_and_both():
    table = build(policy("x", "p", ingress=[{"from": [
        {"podSelector": {"matchLabels": {"pod": "a"}}},  # x/a only: the policy's namespace
        {"namespaceSelector": {"matchLabels": {"team": "b"}}},  # every pod of y and z
        {"namespaceSelector": {"matchLabels": {"team": "b"}},  # a in y or z (ANDed)
         "podSelector": {"matchLabels": {"pod": "a"}}},
        {"namespaceSelector": {}},  # every pod of the cluster (not host-network ones)
    ]}]))
    assert elements(table, "ingress_x_p_0_from_0") == ("10.42.0.2",)
    assert elements(table, "ingress_x_p_0_from_1") == ("10.42.0.4", "10.42.1.6", "10.42.1.7")
    assert elements(table, "ingress_x_p_0_from_2") == ("10.42.0.4", "10.42.1.7")
    assert elements(table, "ingress_x_p_0_from_3") == (
        "10.42.0.2", "10.42.0.4", "10.42.0.5", "10.42.1.3", "10.42.1.6", "10.42.1.7")
    # peers are ORed: one rule each
    assert table.chains["ingress_x_p"] == tuple(
        f"ip saddr @ingress_x_p_0_from_{j} accept" for j in range(4))


def test_an_except_narrows_only_its_own_block():
    table = build(policy("x", "p", egress=[{"to": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16", "10.43.0.0/16"]}},
        {"ipBlock": {"cidr": "10.42.0.4/32"}},
    ]}], types=["Egress"]))
    assert table.chains["egress_x_p"] == (
        "ip daddr 10.0.0.0/8 ip daddr != { 10.42.0.0/16, 10.43.0.0/16 } accept",
        "ip daddr 10.42.0.4/32 accept")  # still allowed: the except above is not a deny


def test_named_ports_resolve_against_the_destination_pods():
    ingress = build(policy("x", "in", ingress=[{"ports": [{"port": "serve-80",
                                                            "protocol": "TCP"}]}]))
    # ingress: the selected pods of this node that name the port, each with its number
    assert elements(ingress, "ingress_x_in_0_port_0") == ("10.42.0.2 . tcp . 80",)
    egress = build(policy("y", "out", types=["Egress"], egress=[
        {"ports": [{"port": "serve-80", "protocol": "TCP"},
                   {"port": "serve-80", "protocol": "UDP"}]}]))
    # egress: any pod of the cluster that names it; the protocol must match too
    assert elements(egress, "egress_y_out_0_port_0") == (
        "10.42.0.2 . tcp . 80", "10.42.1.3 . tcp . 8080")
    assert elements(egress, "egress_y_out_0_port_1") == ()


def test_ports_by_number_range_protocol_and_peers_combine():
    table = build(policy("x", "p", ingress=[{
        "from": [{"podSelector": {}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}],
        "ports": [{"port": 80, "endPort": 81}, {"protocol": "SCTP", "port": 82},
                  {"protocol": "UDP"}]}]))
    assert table.chains["ingress_x_p"] == (
        "ip saddr @ingress_x_p_0_from_0 meta l4proto tcp th dport 80-81 accept",
        "ip saddr @ingress_x_p_0_from_0 meta l4proto sctp th dport 82 accept",
        "ip saddr @ingress_x_p_0_from_0 meta l4proto udp accept",
        "ip saddr 192.0.2.0/24 meta l4proto tcp th dport 80-81 accept",
        "ip saddr 192.0.2.0/24 meta l4proto sctp th dport 82 accept",
        "ip saddr 192.0.2.0/24 meta l4proto udp accept")


def test_an_empty_rule_allows_everything_and_policies_are_visited_in_order():
    table = build(policy("x", "b-all", ingress=[{}]), policy("x", "a-deny"))
    assert table.chains["ingress_x_b-all"] == ("accept",)
    assert table.chains["ingress-pod-10.42.0.2"] == ("jump ingress_x_b-all", "goto deny")


def test_a_pod_that_starts_changes_set_elements_only():
    web = policy("x", "web", {"matchLabels": {"pod": "a"}},
                 ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}])
    before = build(web)
    after = build(web, pods=PODS + [pod("x", "client", "10.42.0.9",
                                        labels={"role": "client"})])
    assert nftscript.delta(before, after) == (
        "add element ip k8py-policy ingress_x_web_0_from_0 { 10.42.0.9 }\n")
    assert nftscript.delta(after, before) == (
        "delete element ip k8py-policy ingress_x_web_0_from_0 { 10.42.0.9 }\n")


def test_a_policy_removed_takes_its_chains_and_sets_with_it():
    web = policy("x", "web", ingress=[{"from": [{"podSelector": {}}]}])
    script = nftscript.delta(build(web), build())
    assert "delete element ip k8py-policy ingress-pods" in script
    assert script.index("flush chain ip k8py-policy ingress-pod-10.42.0.2\n") < \
        script.index("delete chain ip k8py-policy ingress-pod-10.42.0.2\n")
    assert "delete set ip k8py-policy ingress_x_web_0_from_0" in script


def test_long_names_are_shortened_and_stay_distinct():
    long = "n" * 63
    one = build(policy(long, "p" * 250, ingress=[{"from": [{"podSelector": {}}]}]),
                pods=[pod(long, "a", "10.42.0.8")])
    names = list(one.chains) + list(one.sets)
    assert all(len(name) <= 256 for name in names)
    assert len(set(names)) == len(names)


def test_the_removal_script_names_only_the_policy_table():
    assert policyrules.removal() == \
        "table ip k8py-policy {}\ndelete table ip k8py-policy\n"


def test_the_enforcer_rebuilds_only_for_what_its_pods_keep():
    from k8py.net.policy import PolicyEnforcer, slim_pod

    enforcer = PolicyEnforcer(client=None, node=NODE, nft=object())
    before = pod("x", "a", "10.42.0.2")
    before["metadata"]["resourceVersion"] = "1"
    status_write = {**before, "metadata": {**before["metadata"], "resourceVersion": "2"},
                    "status": {**before["status"], "conditions": [{"type": "Ready"}]}}
    relabelled = {**status_write, "metadata": {**status_write["metadata"],
                                               "labels": {"pod": "b"}}}
    assert not enforcer.matters(slim_pod(before), slim_pod(status_write))
    assert enforcer.matters(slim_pod(status_write), slim_pod(relabelled))
