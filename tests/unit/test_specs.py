"""Pods → CRI configs: exact fields for representative pods (resources → cgroup values, QoS,
security contexts, DNS policies, hostNetwork, hostPorts, hostnames, labels, annotations)."""

from __future__ import annotations

import copy

import pytest

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet import specs
from k8py.agent.kubelet.env import ContainerConfigError
from k8py.runtime import cri_pb2

CONFIG = AgentConfig(data_dir="/var/lib/k8py", cluster_dns="10.43.0.10",
                     cluster_domain="cluster.local")
HOST_DNS = (["192.168.1.1", "192.168.1.2"], ["corp.example"], ["edns0"])
GIB = 1 << 30


def make_pod(*containers, **spec) -> dict:
    return {"metadata": {"name": "web", "namespace": "shop", "uid": "0a1b-2c",
                         "labels": {"app": "web"}, "annotations": {"note": "n"}},
            "spec": {"containers": list(containers) or [container()], **spec}}


def container(name="app", **fields) -> dict:
    return {"name": name, "image": "k8py.local/busybox:latest", **fields}


def sandbox(pod):
    return specs.sandbox_config(pod, "node-1", CONFIG, host_dns_settings=HOST_DNS)


def build(pod, c=None, envs=(), restart=0):
    c = c or pod["spec"]["containers"][0]
    return specs.container_config(pod, c, sandbox(pod), [], list(envs), restart,
                                  f"{c['name']}/{restart}.log", memory_capacity=16 * GIB)


# --- sandbox ----------------------------------------------------------------------------------

def test_sandbox_basics():
    sb = sandbox(make_pod())
    assert sb.metadata == cri_pb2.PodSandboxMetadata(name="web", uid="0a1b-2c",
                                                     namespace="shop", attempt=0)
    assert sb.hostname == "web"
    assert sb.log_directory == "/var/lib/k8py/agent/logs/shop_web_0a1b-2c"
    assert dict(sb.labels) == {"app": "web", "io.kubernetes.pod.name": "web",
                               "io.kubernetes.pod.namespace": "shop",
                               "io.kubernetes.pod.uid": "0a1b-2c"}
    assert dict(sb.annotations) == {"note": "n"}
    assert sb.linux.cgroup_parent == "/k8py/pod0a1b-2c"
    ns = sb.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (cri_pb2.POD, cri_pb2.CONTAINER, cri_pb2.POD)
    assert not sb.linux.security_context.privileged
    assert sb.linux.security_context.seccomp.profile_type == \
        cri_pb2.SecurityProfile.RuntimeDefault
    assert not sb.linux.security_context.HasField("run_as_user")


def test_cluster_first_dns():
    dns = sandbox(make_pod()).dns_config
    assert list(dns.servers) == ["10.43.0.10"]
    assert list(dns.searches) == ["shop.svc.cluster.local", "svc.cluster.local",
                                  "cluster.local", "corp.example"]
    assert list(dns.options) == ["ndots:5"]


def test_default_dns_and_host_network_fall_back_to_the_node():
    for pod in (make_pod(dnsPolicy="Default"),
                make_pod(hostNetwork=True, dnsPolicy="ClusterFirst")):
        dns = sandbox(pod).dns_config
        assert (list(dns.servers), list(dns.searches), list(dns.options)) == \
            (HOST_DNS[0], HOST_DNS[1], HOST_DNS[2])


def test_cluster_first_with_host_net_uses_cluster_dns():
    dns = sandbox(make_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")).dns_config
    assert list(dns.servers) == ["10.43.0.10"]


def test_dns_none_with_dns_config_and_option_merge():
    pod = make_pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1"], "searches": ["a.example", "a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]})
    dns = sandbox(pod).dns_config
    assert (list(dns.servers), list(dns.searches), list(dns.options)) == \
        (["1.1.1.1"], ["a.example"], ["ndots:2", "rotate"])
    merged = sandbox(make_pod(dnsConfig={"options": [{"name": "ndots", "value": "1"},
                                                     {"name": "edns0"}],
                                         "nameservers": ["9.9.9.9"]})).dns_config
    assert list(merged.options) == ["ndots:1", "edns0"]
    assert list(merged.servers) == ["10.43.0.10", "9.9.9.9"]


def test_host_network_pod_has_empty_hostname_and_node_namespaces():
    pod = make_pod(hostNetwork=True, hostPID=True, hostIPC=True)
    sb = sandbox(pod)
    assert sb.hostname == ""
    ns = sb.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (cri_pb2.NODE, cri_pb2.NODE, cri_pb2.NODE)
    assert sandbox(make_pod(shareProcessNamespace=True)).linux.security_context \
        .namespace_options.pid == cri_pb2.POD


def test_hostnames_subdomain_and_fqdn():
    pod = make_pod(hostname="db-0", subdomain="db")
    assert sandbox(pod).hostname == "db-0"
    assert specs.hostname_and_domain(pod, "cluster.local") == ("db-0",
                                                               "db.shop.svc.cluster.local")
    pod["spec"]["setHostnameAsFQDN"] = True
    assert sandbox(pod).hostname == "db-0.db.shop.svc.cluster.local"
    pod["spec"]["hostname"] = "h" * 50
    with pytest.raises(ContainerConfigError, match="too long"):
        sandbox(pod)
    long_name = make_pod()
    long_name["metadata"]["name"] = "x" * 62 + "-abc"
    assert sandbox(long_name).hostname == "x" * 62


def test_port_mappings_include_host_ports_and_protocols():
    pod = make_pod(container(ports=[
        {"containerPort": 80, "hostPort": 8080, "name": "http"},
        {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
        {"containerPort": 9090}]))
    assert list(sandbox(pod).port_mappings) == [
        cri_pb2.PortMapping(protocol=cri_pb2.TCP, container_port=80, host_port=8080),
        cri_pb2.PortMapping(protocol=cri_pb2.UDP, container_port=53, host_port=5353,
                            host_ip="127.0.0.1"),
        cri_pb2.PortMapping(protocol=cri_pb2.TCP, container_port=9090, host_port=0)]


def test_pod_security_context_in_sandbox():
    pod = make_pod(container(securityContext={"privileged": True}), securityContext={
        "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000],
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]})
    sc = sandbox(pod).linux.security_context
    assert sc.run_as_user.value == 1000 and sc.run_as_group.value == 3000
    assert list(sc.supplemental_groups) == [2000, 4000]
    assert sc.privileged
    assert dict(sandbox(pod).linux.sysctls) == {"net.ipv4.ip_unprivileged_port_start": "0"}


# --- resources and QoS ------------------------------------------------------------------------

def test_guaranteed_resources():
    c = container(resources={"requests": {"cpu": "500m", "memory": "128Mi"},
                             "limits": {"cpu": "500m", "memory": "128Mi"}})
    pod = make_pod(c)
    assert specs.qos_class(pod) == "Guaranteed"
    r = build(pod).linux.resources
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes,
            r.oom_score_adj) == (512, 50000, 100000, 128 << 20, -997)


def test_burstable_resources_and_oom_score():
    c = container(resources={"requests": {"cpu": "100m", "memory": "1Gi"},
                             "limits": {"cpu": "2", "memory": "2Gi"}})
    pod = make_pod(c)
    assert specs.qos_class(pod) == "Burstable"
    r = build(pod).linux.resources
    assert (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes) == (102, 200000, 2 << 30)
    assert r.oom_score_adj == 1000 - 1000 * GIB // (16 * GIB)  # 938
    # A request near capacity still scores above Guaranteed; a tiny one below BestEffort.
    big = make_pod(container(resources={"requests": {"memory": "16Gi"}}))
    assert build(big).linux.resources.oom_score_adj == 3
    tiny = make_pod(container(resources={"requests": {"memory": "1"}}))
    assert build(tiny).linux.resources.oom_score_adj == 999


def test_best_effort_and_minimums():
    pod = make_pod()
    assert specs.qos_class(pod) == "BestEffort"
    r = build(pod).linux.resources
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes,
            r.oom_score_adj) == (2, 0, 100000, 0, 1000)
    small = make_pod(container(resources={"requests": {"cpu": "1m"}, "limits": {"cpu": "1m"}}))
    r = build(small).linux.resources
    assert (r.cpu_shares, r.cpu_quota) == (2, 1000)


def test_cpu_limit_without_request_sets_shares():
    pod = make_pod(container(resources={"limits": {"cpu": "250m"}}))
    assert build(pod).linux.resources.cpu_shares == 256


def test_qos_counts_init_containers_and_status_wins():
    main = container(resources={"requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"cpu": "1", "memory": "1Gi"}})
    pod = make_pod(main, initContainers=[container("init")])
    assert specs.qos_class(pod) == "Burstable"
    pod["spec"]["initContainers"] = [copy.deepcopy(main) | {"name": "init"}]
    assert specs.qos_class(pod) == "Guaranteed"
    pod["status"] = {"qosClass": "BestEffort"}
    assert specs.qos_class(pod) == "BestEffort"


def test_node_critical_pods_get_guaranteed_score():
    pod = make_pod(priorityClassName="system-node-critical", priority=2000001000)
    assert build(pod).linux.resources.oom_score_adj == -997


# --- the container ----------------------------------------------------------------------------

def test_container_fields():
    c = container(command=["/bin/sh", "-c"], args=["echo $(GREETING) $(MISSING) $$(GREETING)"],
                  workingDir="/work", stdin=True, tty=True,
                  lifecycle={"preStop": {"exec": {"command": ["true"]}}},
                  ports=[{"containerPort": 80}])
    pod = make_pod(c, terminationGracePeriodSeconds=30)
    mounts = [cri_pb2.Mount(container_path="/data", host_path="/host/data")]
    envs = [cri_pb2.KeyValue(key="GREETING", value=b"hello")]
    cfg = specs.container_config(pod, c, sandbox(pod), mounts, envs, 3, "app/3.log",
                                 image_ref="sha256:abc", memory_capacity=GIB)
    assert cfg.metadata == cri_pb2.ContainerMetadata(name="app", attempt=3)
    assert cfg.image == cri_pb2.ImageSpec(image="sha256:abc",
                                          user_specified_image="k8py.local/busybox:latest")
    assert list(cfg.command) == ["/bin/sh", "-c"]
    assert list(cfg.args) == ["echo hello $(MISSING) $(GREETING)"]
    assert cfg.working_dir == "/work"
    assert list(cfg.envs) == envs and list(cfg.mounts) == mounts
    assert (cfg.stdin, cfg.stdin_once, cfg.tty) == (True, False, True)
    assert cfg.log_path == "app/3.log"
    assert dict(cfg.labels) == {"io.kubernetes.pod.name": "web",
                                "io.kubernetes.pod.namespace": "shop",
                                "io.kubernetes.pod.uid": "0a1b-2c",
                                "io.kubernetes.container.name": "app"}
    annotations = dict(cfg.annotations)
    assert annotations["io.kubernetes.container.restartCount"] == "3"
    assert annotations["io.kubernetes.container.terminationMessagePath"] == \
        "/dev/termination-log"
    assert annotations["io.kubernetes.pod.terminationGracePeriod"] == "30"
    assert annotations["io.kubernetes.container.preStopHandler"] == \
        '{"exec":{"command":["true"]}}'
    assert annotations["io.kubernetes.container.hash"] == specs.container_hash(c)
    assert specs.container_hash(c) != specs.container_hash({**c, "image": "other"})


def test_default_security_context():
    sc = build(make_pod()).linux.security_context
    assert not sc.privileged and not sc.readonly_rootfs and not sc.no_new_privs
    assert list(sc.masked_paths) == list(specs.DEFAULT_MASKED_PATHS)
    assert list(sc.readonly_paths) == list(specs.DEFAULT_READONLY_PATHS)
    assert not sc.HasField("run_as_user")
    assert sc.seccomp.profile_type == cri_pb2.SecurityProfile.Unconfined


def test_container_security_context_over_pod_settings():
    c = container(securityContext={
        "runAsUser": 1001, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}})
    pod = make_pod(c, securityContext={"runAsUser": 1000, "runAsGroup": 3000,
                                       "fsGroup": 2000, "supplementalGroups": [5]})
    sc = build(pod).linux.security_context
    assert sc.run_as_user.value == 1001 and sc.run_as_group.value == 3000
    assert sc.readonly_rootfs and sc.no_new_privs
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert list(sc.supplemental_groups) == [2000, 5]
    assert sc.seccomp.profile_type == cri_pb2.SecurityProfile.RuntimeDefault


def test_privileged_container_has_no_masked_paths():
    sc = build(make_pod(container(securityContext={"privileged": True}))) \
        .linux.security_context
    assert sc.privileged and not sc.masked_paths and not sc.readonly_paths


def test_run_as_non_root():
    pod = make_pod(container(securityContext={"runAsNonRoot": True, "runAsUser": 0}))
    with pytest.raises(ContainerConfigError,
                       match=r"container's runAsUser breaks non-root policy "
                             r'\(pod: "web_shop\(0a1b-2c\)", container: app\)'):
        build(pod)
    pod = make_pod(securityContext={"runAsNonRoot": True})
    c = pod["spec"]["containers"][0]
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        specs.container_config(pod, c, sandbox(pod), [], [], 0, "app/0.log", image_uid=0,
                               memory_capacity=GIB)
    with pytest.raises(ContainerConfigError, match=r"non-numeric user \(nobody\)"):
        specs.container_config(pod, c, sandbox(pod), [], [], 0, "app/0.log",
                               image_username="nobody", memory_capacity=GIB)
    cfg = specs.container_config(pod, c, sandbox(pod), [], [], 0, "app/0.log", image_uid=65534,
                                 memory_capacity=GIB)
    assert cfg.linux.security_context.run_as_user.value == 65534
