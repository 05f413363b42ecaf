"""High availability end to end, on one `k8py lab --servers 3 --agents 1` for the module:
three servers on an embedded etcd cluster (server-1 `--cluster-init`, the others joined with
its token) and an agent that learned all three. Failures are caused as an operator would,
with `k8py lab kill|stop|start|isolate|rejoin`, and observed with the real kubectl through a
live server (each server's own kubeconfig):

- the server leading the scheduler and the controller manager is killed: another server
  holds both Leases within the lease duration (the takeover time is printed), and a
  Deployment scaled during the gap converges;
- a server's etcd member is killed: writes through the other servers go on;
- a server is cut off the network: every write acknowledged during and after the cut, through
  the others or through itself, is there after it rejoins, on every server;
- the server the agent uses stops: the agent's pods keep running (same containers, answering
  on their IPs), its node stays Ready through another server;
- snapshot, wipe every server's datastore, restore server-1 from the file, the others join
  it empty: every object back at its resourceVersion, the agent's pods never restarted.

Each test leaves every server running and Ready, for the next.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import find_kubectl
from tests.e2e.labcluster import ECHO, IMAGE, LabCluster, running_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge")
                       or not os.path.exists("/usr/bin/etcd"),
                       reason="needs root, containerd, the CNI plugins and etcd"),
]

SERVERS = ("server-1", "server-2", "server-3")
LEASES = ("kube-scheduler", "kube-controller-manager")
LEASE_DURATION, RETRY_PERIOD = 15, 2  # upstream's defaults, which the servers use


class HALab(LabCluster):
    def kubeconfig_of(self, server: str) -> str:
        lab_dir = os.path.dirname(self.kubeconfig)
        return self.kubeconfig if server == SERVERS[0] else \
            os.path.join(lab_dir, f"kubeconfig-{server}")

    def via(self, server: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """kubectl through `server`'s API server only."""
        done = subprocess.run([find_kubectl(), "--kubeconfig", self.kubeconfig_of(server),
                               "--cache-dir", os.path.join(self.home, "cache"), *args],
                              input=input, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": self.home})
        if check:
            assert done.returncode == 0, (server, args, done.stderr)
        return done

    def running_servers(self) -> list[str]:
        rows = [self.node_status(s) for s in SERVERS]
        return [row[0] for row in rows if row[3] == "yes" and row[4] == "connected"]

    def ready_nodes(self, server: str) -> set[str]:
        done = self.via(server, "get", "nodes", "-o", "json", check=False, timeout=20)
        if done.returncode != 0:
            return set()
        return {n["metadata"]["name"] for n in json.loads(done.stdout)["items"]
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n["status"]["conditions"])}

    def all_healthy(self, timeout: float = 120) -> None:
        """Every server runs, answers /readyz, and sees every node Ready."""
        assert self.running_servers() == list(SERVERS)
        for server in SERVERS:
            try:
                wait_for(lambda s=server: self.via(s, "get", "--raw", "/readyz", check=False,
                                                    timeout=20).returncode == 0,
                         timeout=timeout, interval=1, what=f"{server} ready")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its log ends:\n{self.log_tail(server)}") from None
        wait_for(lambda: self.ready_nodes(SERVERS[-1]) >= {*SERVERS, "agent-1"},
                 timeout=timeout, interval=1, what="every node Ready")

    def holders(self, server: str) -> dict[str, str]:
        """The node each of the scheduler's and controller manager's Leases is held by."""
        done = self.via(server, "get", "leases", "-n", "kube-system", *LEASES, "-o", "json",
                        check=False, timeout=10)
        if done.returncode != 0:
            return {}
        return {lease["metadata"]["name"]: (lease["spec"].get("holderIdentity") or "")
                .split("_")[0] for lease in json.loads(done.stdout)["items"]}

    def log_tail(self, node: str, lines: int = 40) -> str:
        with open(os.path.join(os.path.dirname(self.kubeconfig), f"{node}.log"),
                  errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def agent_server(self) -> str:
        """The server agent-1 uses now: the last move its log tells, else its --server."""
        with open(os.path.join(os.path.dirname(self.kubeconfig), "agent-1.log")) as f:
            moves = re.findall(r"using https://([\d.]+):6443", f.read())
        address = moves[-1] if moves else self.node_ip(SERVERS[0])
        return next(s for s in SERVERS if self.node_ip(s) == address)


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    for cluster in running_lab(tmp_path_factory, "--servers", "3", "--agents", "1"):
        cluster.__class__ = HALab
        yield cluster


@pytest.fixture
def healthy(ha):
    """Every server up and Ready before the test, and again after it."""
    ha.all_healthy()
    yield ha
    for server in SERVERS:
        row = ha.node_status(server)
        if row[4] == "isolated":
            ha.k8py("rejoin", server)
        if row[3] == "no":
            ha.k8py("start", server)
    ha.all_healthy()


def deployment(name: str, replicas: int) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "nodeSelector": {"kubernetes.io/hostname": "agent-1"},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}}})


def ready_replicas(ha: HALab, server: str, name: str) -> int:
    done = ha.via(server, "get", "deployment", name, "-o", "json", check=False, timeout=20)
    return json.loads(done.stdout)["status"].get("readyReplicas", 0) \
        if done.returncode == 0 else -1


def test_another_server_takes_over_the_scheduler_and_controllers(healthy):
    ha = healthy
    holders = wait_for(lambda: (h := ha.holders(SERVERS[0])) and len(h) == 2 and h,
                       timeout=60, interval=1, what="both Leases held")
    leader = holders["kube-scheduler"]
    assert leader in SERVERS, holders
    others = [s for s in SERVERS if s != leader]
    ha.via(others[0], "apply", "-f", "-", input=deployment("ha-gap", 1))
    wait_for(lambda: ready_replicas(ha, others[0], "ha-gap") == 1, timeout=90, interval=1,
             what="ha-gap ready")

    ha.k8py("kill", leader)
    killed_at = time.monotonic()
    # scaled while nobody leads: nothing acts on it until a new leader's controllers run
    ha.via(others[0], "scale", "deployment", "ha-gap", "--replicas", "3")

    def taken_over():
        now = ha.holders(others[1])
        return all(now.get(lease) in others for lease in LEASES) and now
    now = wait_for(taken_over, timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 10, interval=0.25,
                   what="another server holding both Leases")
    takeover = time.monotonic() - killed_at
    print(f"\nleader {leader} killed: {now} took over in {takeover:.1f} s")
    # a crashed leader does not release its Leases: the candidates, watching them, take them
    # as they run out (the lease duration after the last renewal: 13-15 s), later only if
    # etcd is still electing a new leader when the killed server's member led it (seconds
    # on a loaded 2-core host); the bound is the wait's, not a benchmark (bench/ha.py)
    assert takeover <= LEASE_DURATION + 2 * RETRY_PERIOD + 6, takeover
    wait_for(lambda: ready_replicas(ha, others[1], "ha-gap") == 3, timeout=90, interval=1,
             what="ha-gap scaled to 3 by the new leader")
    ha.k8py("start", leader)
    ha.via(others[0], "delete", "deployment", "ha-gap", "--wait=false")


def test_writes_go_on_when_one_etcd_member_is_killed(healthy):
    ha = healthy
    victim, *others = SERVERS[2], SERVERS[0], SERVERS[1]
    ha.k8py("kill", victim)
    for i in range(5):
        for server in others:
            ha.via(server, "create", "configmap", f"ha-kill-{server}-{i}",
                   "--from-literal", f"i={i}", timeout=30)
    for server in others:
        listed = ha.via(server, "get", "configmaps", "-o", "name").stdout.split()
        assert {f"configmap/ha-kill-{s}-{i}" for s in others for i in range(5)} <= set(listed)
    ha.k8py("start", victim)
    wait_for(lambda: ha.via(victim, "get", "configmap", "ha-kill-server-1-4",
                            check=False, timeout=20).returncode == 0,
             timeout=120, interval=1, what=f"{victim} back, serving the writes it missed")


class Writer(threading.Thread):
    """Creates ConfigMaps `<prefix>-<n>` through one server, one after the other, until
    stopped; `acknowledged` are those kubectl reported created."""

    def __init__(self, ha: HALab, server: str, prefix: str, netns_of: str | None = None):
        super().__init__(daemon=True)
        self.ha, self.server, self.prefix, self.netns_of = ha, server, prefix, netns_of
        self.acknowledged: list[str] = []
        self.attempts = 0
        self.stopping = threading.Event()
        self.last_error = ""

    def run(self) -> None:
        kubectl = [find_kubectl(), "--kubeconfig", self.ha.kubeconfig_of(self.server),
                   "--cache-dir", os.path.join(self.ha.home, "cache-" + self.prefix),
                   "--request-timeout", "5s"]
        if self.netns_of:  # from inside the node: its own API server, even when cut off
            kubectl = ["nsenter", f"--net=/run/netns/k8py-lab-{self.ha.name}-{self.netns_of}",
                       *kubectl]
        while not self.stopping.is_set():
            name = f"{self.prefix}-{self.attempts}"
            self.attempts += 1
            try:
                done = subprocess.run([*kubectl, "create", "configmap", name], timeout=15,
                                      capture_output=True, text=True,
                                      env={**os.environ, "HOME": self.ha.home})
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0:
                self.acknowledged.append(name)
            else:
                self.last_error = done.stderr.strip()


def test_no_acknowledged_write_is_lost_across_a_cut_off_server(healthy):
    ha = healthy
    cut, through = SERVERS[1], SERVERS[2]
    writers = [Writer(ha, through, "ha-cut-out"), Writer(ha, cut, "ha-cut-in", netns_of=cut)]
    try:
        for writer in writers:
            writer.start()
        wait_for(lambda: all(len(w.acknowledged) >= 3 for w in writers), timeout=60,
                 interval=0.5, what="writes before the cut")
        ha.k8py("isolate", cut)
        during = [len(w.acknowledged) for w in writers]
        outside = writers[0]
        wait_for(lambda: len(outside.acknowledged) >= during[0] + 5, timeout=60, interval=0.5,
                 what="writes through a connected server during the cut")
        ha.k8py("rejoin", cut)
        try:
            wait_for(lambda: all(len(w.acknowledged) >= n + 3 for w, n in zip(writers, during)),
                     timeout=90, interval=0.5, what="writes through both after the rejoin")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {[w.last_error for w in writers]}; {cut}'s log "
                                 f"ends:\n{ha.log_tail(cut)}") from None
    finally:  # no kubectl left running against the lab, whatever happened
        for writer in writers:
            writer.stopping.set()
        for writer in writers:
            writer.join(timeout=30)
    acknowledged = {name for w in writers for name in w.acknowledged}
    print(f"\nwrites acknowledged: {[len(w.acknowledged) for w in writers]} of "
          f"{[w.attempts for w in writers]} (outside, inside the cut-off server)")
    for server in SERVERS:
        listed = {n.split("/", 1)[1] for n in
                  ha.via(server, "get", "configmaps", "-o", "name").stdout.split()}
        assert not acknowledged - listed, (server, sorted(acknowledged - listed))


def test_the_agent_fails_over_and_its_pods_keep_running(healthy):
    ha = healthy
    ha.pod("ha-echo", "agent-1", ECHO)
    ip = ha.running("ha-echo")["ha-echo"]
    before = json.loads(ha.kubectl("get", "pod", "ha-echo", "-o", "json").stdout)["status"]
    used = ha.agent_server()
    other = next(s for s in SERVERS if s != used)
    ha.k8py("stop", used)
    stopped_at = time.time()

    def agent_renewed_after_stop():
        done = ha.via(other, "get", "lease", "-n", "kube-node-lease", "agent-1", "-o", "json",
                      check=False, timeout=20)
        if done.returncode != 0:
            return False
        renewed = json.loads(done.stdout)["spec"]["renewTime"]
        seconds = calendar.timegm(time.strptime(renewed[:19], "%Y-%m-%dT%H:%M:%S"))
        return seconds > stopped_at + 1
    wait_for(agent_renewed_after_stop, timeout=60, interval=1,
             what="agent-1's node Lease renewed through another server")
    assert ha.agent_server() != used
    assert "agent-1" in ha.ready_nodes(other)
    after = json.loads(ha.via(other, "get", "pod", "ha-echo", "-o", "json").stdout)["status"]
    assert after["phase"] == "Running" and after["podIP"] == ip
    assert [c["containerID"] for c in after["containerStatuses"]] == \
        [c["containerID"] for c in before["containerStatuses"]]
    assert after["containerStatuses"][0]["restartCount"] == 0
    fetched = ha.k8py("exec", "agent-1", "--", "curl", "-s", "--max-time", "5",
                      f"http://{ip}:8080/index.html")
    assert fetched.stdout.strip() == "ha-echo"
    ha.k8py("start", used)
    ha.via(other, "delete", "pod", "ha-echo", "--wait=false")


def test_snapshot_wipe_restore_brings_every_object_back_and_pods_keep_running(healthy, tmp_path):
    """k3s's disaster recovery: a snapshot of server-1's etcd member; every server stopped
    and its datastore (`server/db`) wiped; server-1 restored from the file (`--cluster-reset
    --cluster-reset-restore-path`) and started; the others start empty and join it as new
    members. Every object of the snapshot is back at its resourceVersion (a ConfigMap made
    after it is not), and the agent's pods ran on throughout: same containers, no restart."""
    ha = healthy
    first = SERVERS[0]
    ha.via(first, "apply", "-f", "-", input=deployment("ha-restore", 2))
    wait_for(lambda: ready_replicas(ha, first, "ha-restore") == 2, timeout=90, interval=1,
             what="ha-restore ready")
    for i in range(5):
        ha.via(first, "create", "configmap", f"ha-restore-{i}", "--from-literal", f"i={i}")

    def objects(server: str, kind: str) -> dict[str, dict]:
        listed = json.loads(ha.via(server, "get", kind, "-o", "json").stdout)["items"]
        return {o["metadata"]["name"]: o for o in listed}

    configmaps = {n: o["metadata"]["resourceVersion"]
                  for n, o in objects(first, "configmaps").items()}
    # this test's workload and the cluster's own Service (earlier tests' objects may still be
    # on their way out, and would rightly go again after the restore)
    uids = {kind: {n: o["metadata"]["uid"] for n, o in objects(first, kind).items()
                   if n.startswith("ha-restore") or n == "kubernetes"}
            for kind in ("deployments", "replicasets", "pods", "services")}
    assert all(uids.values()), uids
    containers = {n: [c["containerID"] for c in o["status"]["containerStatuses"]]
                  for n, o in objects(first, "pods").items() if n.startswith("ha-restore-")}
    assert len(containers) == 2

    node_dir = os.path.join(os.path.dirname(ha.kubeconfig), first)
    saved = ha.k8py("exec", first, "--", sys.executable, "-m", "k8py", "etcd-snapshot", "save",
                    "--data-dir", node_dir, "--name", "before-wipe")
    taken = [f for f in os.listdir(os.path.join(node_dir, "server", "db", "snapshots"))
             if f.startswith("before-wipe-")]
    assert len(taken) == 1, (taken, saved.stderr)
    kept = str(tmp_path / "kept.db")  # an operator keeps backups off the machine
    shutil.copy(os.path.join(node_dir, "server", "db", "snapshots", taken[0]), kept)
    ha.via(first, "create", "configmap", "ha-after-snapshot")

    for server in reversed(SERVERS):
        ha.k8py("stop", server)
    for server in SERVERS:
        shutil.rmtree(os.path.join(os.path.dirname(ha.kubeconfig), server, "server", "db"))
    restored = ha.k8py("exec", first, "--", sys.executable, "-m", "k8py", "server",
                       "--data-dir", node_dir, "--node-name", first,
                       "--node-ip", ha.node_ip(first),
                       "--cluster-reset", "--cluster-reset-restore-path", kept)
    assert "restart without --cluster-reset" in restored.stderr
    started = time.monotonic()
    ha.k8py("start", first)
    wait_for(lambda: ha.via(first, "get", "--raw", "/readyz", check=False,
                            timeout=20).returncode == 0,
             timeout=120, interval=1, what=f"{first} serving the restored store")
    for server in SERVERS[1:]:
        ha.k8py("start", server)  # an empty datastore: it joins as a new member
    ha.all_healthy(timeout=240)
    print(f"\nrestored cluster healthy {time.monotonic() - started:.1f} s after the restore")

    members = ha.k8py("exec", first, "--", sys.executable, "-m", "k8py", "etcd", "member",
                      "list", "-d", node_dir).stdout
    assert all(server in members for server in SERVERS), members
    for server in SERVERS:
        back = objects(server, "configmaps")
        assert {n: o["metadata"]["resourceVersion"] for n, o in back.items()
                if n in configmaps} == configmaps, server
        assert "ha-after-snapshot" not in back
    for kind, names in uids.items():
        now = {n: o["metadata"]["uid"] for n, o in objects(first, kind).items()}
        assert {n: now.get(n) for n in names} == names, kind
    for name, ids in containers.items():
        pod = json.loads(ha.via(first, "get", "pod", name, "-o", "json").stdout)
        assert pod["status"]["phase"] == "Running"
        assert [c["containerID"] for c in pod["status"]["containerStatuses"]] == ids
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # the agent follows the restored store: a change made now reaches its pods
    ha.via(first, "scale", "deployment", "ha-restore", "--replicas", "3")
    wait_for(lambda: ready_replicas(ha, first, "ha-restore") == 3, timeout=90, interval=1,
             what="ha-restore scaled on the restored cluster")
    ha.via(first, "delete", "deployment", "ha-restore", "--wait=false")
