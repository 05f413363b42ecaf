"""The client's server list (`k8py.client.loadbalancer`): which API server to use, failing
over, coming back, learning and keeping the list; the URLs an agent reads from the
`kubernetes` endpoints (`k8py.agent.apiservers`)."""

from __future__ import annotations

import json
import os

from k8py.agent.apiservers import server_urls
from k8py.client.loadbalancer import ServerList

A, B, C = "https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def servers(default=A, **options) -> tuple[ServerList, Clock]:
    clock = Clock()
    return ServerList(default, clock=clock, cooldown=15, **options), clock


def test_a_single_server_is_always_the_candidate():
    only, _ = servers()
    only.failed(A)
    assert only.candidates() == [A] and only.current == A


def test_failover_goes_to_the_next_healthy_server_in_list_order():
    lb, _ = servers()
    lb.update([A, B, C])
    assert lb.candidates() == [A, B, C]
    lb.failed(A)
    assert lb.current == B
    assert lb.candidates() == [B, C, A]  # the failed one last, still a candidate
    lb.failed(B)
    assert lb.current == C
    assert lb.candidates() == [C, A, B]  # failed ones: least recently failed first


def test_a_failed_server_comes_back_after_the_cooldown_or_a_good_answer():
    lb, clock = servers()
    lb.update([A, B])
    lb.failed(A)
    clock.now += 14
    assert not lb.is_healthy(A)
    clock.now += 1
    assert lb.is_healthy(A)
    assert lb.current == B and lb.candidates() == [B, A]  # current does not move back
    lb.failed(A)
    lb.healthy(A)
    assert lb.is_healthy(A) and lb.current == B


def test_when_all_failed_a_healthy_answer_makes_that_server_current():
    lb, _ = servers()
    lb.update([A, B])
    lb.failed(A)
    lb.failed(B)
    lb.healthy(A)
    assert lb.current == A


def test_failure_listeners_are_told():
    lb, _ = servers()
    told = []
    lb.on_failure(told.append)
    lb.failed(A)
    assert told == [A]


def test_learning_keeps_the_default_as_a_fallback_and_leaves_a_removed_current():
    lb, _ = servers(default="https://server.example:6443/")
    assert lb.default == "https://server.example:6443"
    assert lb.update([A, B]) and not lb.update([A, B]) and not lb.update([])
    assert lb.candidates() == [lb.default, A, B]
    lb.failed(lb.default)
    assert lb.current == A
    assert lb.update([B, C])  # A stopped: taken out of the endpoints
    assert lb.current == B
    assert lb.candidates() == [B, C, lb.default]


def test_the_list_is_kept_for_the_same_default_only(tmp_path):
    path = str(tmp_path / "agent" / "etc" / "k8py-agent-load-balancer.json")
    lb, _ = servers(state_file=path)
    lb.update([A, B])
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        assert json.load(f) == {"serverURL": A, "servers": [A, B]}
    again = ServerList(A, path)
    assert again.servers == [A, B] and again.current == A
    other = ServerList(C, path)
    assert other.servers == [C]
    with open(path, "w") as f:
        f.write("{not json")
    assert ServerList(A, path).servers == [A]


def test_server_urls_from_the_kubernetes_endpoints():
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                              "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}
    assert server_urls(endpoints) == [A, "https://[fd00::2]:6443"]
    assert server_urls({}) == []
    assert server_urls({"subsets": [{"addresses": [{"ip": "10.0.0.1"}],
                                     "ports": [{"port": 7443}]}]}) == ["https://10.0.0.1:7443"]


def test_every_move_of_the_current_server_is_logged(caplog):
    """An operator (and the HA e2e test) finds the server an agent uses in its log."""
    lb, _ = servers()
    lb.update([A, B, C])
    with caplog.at_level("INFO", logger="k8py.client.loadbalancer"):
        lb.failed(A)  # to B
        lb.failed(B)  # to C
        lb.failed(C)  # all failed: C stays current
        lb.healthy(A)  # a good answer while the current one is failed
        lb.update([B, C])  # A leaves the endpoints
    moves = [r.getMessage().rsplit("using ", 1)[1] for r in caplog.records
             if "using " in r.getMessage()]
    assert moves == [B, C, A, lb.current]
