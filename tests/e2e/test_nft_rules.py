"""The golden rulesets the unit tests pin (tests/unit/net/golden: the Service proxy's and
NetworkPolicy's) are accepted by the kernel's nftables as they are, applied twice (the
second replaces the first in one transaction), and the removal script leaves no table; a
delta leaves the table as a full write would. In namespaces this test creates."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from k8py.net import nftscript, policyrules, servicerules
from tests.e2e import netns

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                 reason="needs root and nftables")]
GOLDEN = os.path.join(os.path.dirname(__file__), "..", "unit", "net", "golden")


@pytest.mark.parametrize("name, rules", [
    ("mixed.nft", servicerules), ("empty.nft", servicerules), ("local.nft", servicerules),
    ("policy.nft", policyrules)])
def test_golden_rulesets_apply_and_go(name, rules):
    with open(os.path.join(GOLDEN, name), encoding="utf-8") as f:
        script = f.read()
    with netns.created() as ns:
        def nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([*netns.nsenter(ns), "nft", *args], input=script,
                                  capture_output=True, text=True)
        for _ in range(2):
            applied = nft("-f", "-", script=script)
            assert applied.returncode == 0, applied.stderr
        assert f"table ip {rules.TABLE}\n" in nft("list", "tables").stdout
        assert nft("-f", "-", script=rules.removal()).returncode == 0
        assert "k8py" not in nft("list", "tables").stdout


def test_a_delta_leaves_the_table_as_a_full_write_would():
    from tests.unit.net.test_servicerules import READY, endpoint_slice, service

    before = servicerules.build(servicerules.service_ports(
        [service("web", sessionAffinity="ClientIP"), service("gone", ip="10.43.0.50"),
         service("empty", ip="10.43.0.60")],
        [endpoint_slice("web", ("10.42.0.1", READY), ("10.42.0.2", READY)),
         endpoint_slice("gone", ("10.42.0.9", READY))]), "10.42.0.0/16")
    after = servicerules.build(servicerules.service_ports(
        [service("web", sessionAffinity="ClientIP"), service("empty", ip="10.43.0.60"),
         service("new", ip="10.43.0.70", type_="NodePort",
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30070}])],
        [endpoint_slice("web", ("10.42.0.2", READY), ("10.42.0.3", READY)),
         endpoint_slice("empty", ("10.42.0.6", READY)),
         endpoint_slice("new", ("10.42.0.7", READY))]), "10.42.0.0/16")
    script = nftscript.delta(before, after)
    assert script and "delete chain ip k8py svc-default-gone-http-tcp" in script
    _check_delta(before, after, script)


def test_a_policy_delta_leaves_the_table_as_a_full_write_would():
    from tests.unit.net.test_policyrules import PODS, build, pod, policy

    web = policy("x", "web", {"matchLabels": {"pod": "a"}}, ingress=[
        {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
         "ports": [{"port": "serve-80", "protocol": "TCP"}]}])
    before = build(web, policy("x", "gone", egress=[{"to": [{"namespaceSelector": {}}]}]))
    after = build(web, policy("y", "new", ingress=[{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}}]}]),
        pods=PODS + [pod("x", "client", "10.42.0.9", labels={"role": "client"})])
    script = nftscript.delta(before, after)
    assert script and "delete chain ip k8py-policy egress_x_gone" in script
    _check_delta(before, after, script)


def _check_delta(before: nftscript.Table, after: nftscript.Table, script: str) -> None:
    listings = []
    for steps in ([nftscript.full(before), script], [nftscript.full(after)]):
        with netns.created() as ns:
            for step in steps:
                done = subprocess.run([*netns.nsenter(ns), "nft", "-f", "-"], input=step,
                                      capture_output=True, text=True)
                assert done.returncode == 0, (done.stderr, step)
            listings.append(_normalized(subprocess.run(
                [*netns.nsenter(ns), "nft", "list", "table", "ip", after.name],
                capture_output=True, text=True).stdout))
    assert listings[0] == listings[1]
    assert nftscript.delta(after, after) == ""


def _normalized(listing: str) -> list[str]:
    """The listing's blocks as sorted text (a delta adds chains and elements in another
    order than a full write; the content is what must agree)."""
    blocks, current = [], []
    for line in listing.splitlines():
        current.append(line.strip())
        if line.strip() == "}":
            blocks.append("\n".join(sorted(current)))
            current = []
    return sorted(blocks)
