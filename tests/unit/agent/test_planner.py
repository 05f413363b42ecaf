"""The pod worker's planner, table by table: every restart policy against every way a
container can stand (never started, created, running with and without a failed probe,
exited with success or failure, inside and outside its back-off), init containers,
ephemeral containers, start errors, and the sandbox step."""

from __future__ import annotations

import pytest

from k8py.agent.kubelet import planner
from k8py.agent.kubelet.planner import (CrashLoop, Instance, Kill, PodState, Remove, Seen,
                                        Settle, Start, StopProbes, WatchProbes)

POLICIES = ("Always", "OnFailure", "Never")


def spec(policy="Always", containers=("main",), init=(), ephemeral=()):
    return {"restartPolicy": policy,
            "initContainers": [{"name": n} for n in init],
            "containers": [{"name": n} for n in containers],
            "ephemeralContainers": [e if isinstance(e, dict) else {"name": e}
                                    for e in ephemeral]}


def exited(code, attempt=0, cid="c1"):
    return Instance(cid, planner.EXITED, attempt, code)


def running(cid="c1", attempt=0, probed=True, kill=""):
    return Instance(cid, planner.RUNNING, attempt, probed=probed, probe_kill=kill)


def plan(pod_spec, **containers):
    return planner.plan_containers(pod_spec, PodState(containers))


# --- regular containers: restart policy x exit x back-off ----------------------------------

@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("code", [0, 1, 137])
@pytest.mark.parametrize("backoff", [0.0, 5.0])
def test_an_exited_container(policy, code, backoff):
    result = plan(spec(policy), main=Seen((exited(code, attempt=2),), restart_backoff=backoff))
    restart = policy == "Always" or (policy == "OnFailure" and code != 0)
    assert result.actions[0] == StopProbes("c1")
    if not restart:
        assert result.actions[1:] == [Settle("main")] and result.requeue is None
    elif backoff:
        assert result.actions[1:] == [CrashLoop("main")] and result.requeue == backoff
    else:
        assert result.actions[1:] == [Start("main", 3, ("c1",), restart=True)]
        assert result.acts


@pytest.mark.parametrize("policy", POLICIES)
def test_a_container_never_started_starts(policy):
    result = plan(spec(policy), main=Seen())
    assert result.actions == [Start("main", 0)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("waiting", ["CreateContainerConfigError", "CreateContainerError",
                                     "RunContainerError"])
def test_a_failed_start_waits_for_its_back_off(policy, waiting):
    result = plan(spec(policy), main=Seen(waiting=waiting, start_backoff=3.0))
    assert result.actions == [] and result.requeue == 3.0
    again = plan(spec(policy), main=Seen(waiting=waiting, start_backoff=0.0))
    assert again.actions == [Start("main", 0)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("probed,kill,expected", [
    (True, "", []),                                                   # healthy
    (True, "Container main failed liveness probe, will be restarted",
     [Kill("main", "c1", "Container main failed liveness probe, will be restarted")]),
    (True, "Container main failed startup probe, will be restarted",
     [Kill("main", "c1", "Container main failed startup probe, will be restarted")]),
    (False, "", [WatchProbes("main", "c1")]),                         # adopted
])
def test_a_running_container_and_its_probes(policy, probed, kill, expected):
    result = plan(spec(policy), main=Seen((running(probed=probed, kill=kill),)))
    assert result.actions == expected


def test_a_created_but_never_started_container_starts_over_with_its_attempt():
    older = exited(1, attempt=1, cid="c0")
    result = plan(spec(), main=Seen((Instance("c2", planner.CREATED, 2), older)))
    assert result.actions == [Remove("c2"), Start("main", 2, ("c0",))]


@pytest.mark.parametrize("state", [None, planner.UNKNOWN])
def test_an_unreadable_or_unknown_container_is_left_alone(state):
    assert plan(spec(), main=Seen((Instance("c1", state),))).actions == []


# --- init containers ---------------------------------------------------------------------------

def test_init_containers_run_one_at_a_time_before_the_containers():
    pod = spec("Always", init=("a", "b"))
    assert plan(pod).actions == [Start("a", 0)]
    assert plan(pod, a=Seen((running("ia"),))).actions == []
    assert plan(pod, a=Seen((exited(0, cid="ia"),))).actions == [StopProbes("ia"), Start("b", 0)]
    both = plan(pod, a=Seen((exited(0, cid="ia"),)), b=Seen((exited(0, cid="ib"),)))
    assert both.actions == [StopProbes("ia"), StopProbes("ib"), Start("main", 0)]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_failed_init_container(policy):
    result = plan(spec(policy, init=("setup",)), setup=Seen((exited(2, cid="i1"),)))
    if policy == "Never":  # the pod fails; nothing more starts
        assert result.actions == [StopProbes("i1")]
    else:  # restarted whatever the pod's policy says, as OnFailure
        assert result.actions == [StopProbes("i1"), Start("setup", 1, ("i1",), restart=True)]
    backing_off = plan(spec(policy, init=("setup",)),
                       setup=Seen((exited(2, cid="i1"),), restart_backoff=4.0))
    if policy != "Never":
        assert backing_off.actions == [StopProbes("i1"), CrashLoop("setup")]
        assert backing_off.requeue == 4.0


# --- ephemeral containers --------------------------------------------------------------------

def test_an_ephemeral_container_runs_once():
    pod = spec(ephemeral=("debug",))
    started = plan(pod, main=Seen((running(),)))
    assert started.actions == [Start("debug", 0, ephemeral=True)]
    for done in (exited(0, cid="d1"), exited(1, cid="d1"), running("d1")):
        assert plan(pod, main=Seen((running(),)), debug=Seen((done,))).actions == []


def test_an_ephemeral_container_waits_for_its_target_and_joins_it():
    pod = spec(ephemeral=({"name": "debug", "targetContainerName": "main"},))
    waiting = plan(pod, main=Seen((exited(1),), restart_backoff=5.0))
    assert not any(isinstance(a, Start) and a.name == "debug" for a in waiting.actions)
    assert waiting.requeue == 1.0
    joined = plan(pod, main=Seen((running("m1"),)))
    assert joined.actions == [Start("debug", 0, target="m1", ephemeral=True)]


def test_ephemeral_containers_wait_for_the_init_containers():
    pod = spec(init=("setup",), ephemeral=("debug",))
    assert plan(pod, setup=Seen((running("i1"),))).actions == []


# --- the sandbox --------------------------------------------------------------------------------

@pytest.mark.parametrize("deleting,phase,ready,host,network,expected", [
    (True, "Running", True, False, True, planner.TERMINATE),
    (True, None, False, False, False, planner.TERMINATE),
    (False, "Succeeded", True, False, True, planner.STOP_SANDBOX),
    (False, "Failed", False, False, True, planner.STOP_SANDBOX),
    (False, "Running", True, False, True, planner.CONTAINERS),
    (False, "Pending", False, False, False, planner.WAIT_FOR_NETWORK),
    (False, "Pending", False, True, False, planner.START_SANDBOX),  # host network needs no CNI
    (False, "Pending", False, False, True, planner.START_SANDBOX),
    (False, "Running", False, False, True, planner.START_SANDBOX),  # the sandbox died
])
def test_the_sandbox_step(deleting, phase, ready, host, network, expected):
    assert planner.plan_sandbox(deleting=deleting, phase=phase, sandbox_ready=ready,
                                host_network=host, network_ready=network) == expected
