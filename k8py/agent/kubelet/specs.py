"""Pods → CRI configs: pure functions, following upstream's kuberuntime field by field.

- `sandbox_config(pod, node_name, config)` is `generatePodSandboxConfig`: metadata, hostname
  (empty for hostNetwork pods: containerd then keeps the node's), the pod's log directory,
  DNS (`dns_config`, upstream's `GetPodDNS`), port mappings of every container port (containerd
  hands those with a hostPort to the portmap plugin), labels and annotations, and the Linux
  part: cgroup parent, namespaces (host network/pid/ipc, shared pid), run-as user/group,
  supplemental groups (fsGroup first), sysctls, privileged if any container is.
- `container_config(...)` is `generateContainerConfig`: image, command/args with `$(VAR)`
  expanded from the container's environment, working dir, env, mounts, labels, the
  annotations a restarted kubelet reads back (restart count, hash, termination message path,
  grace period, preStop, ports), log path, stdin/tty, resources (`linux_resources`) and the
  effective security context (pod-level settings under container-level ones).
- `qos_class(pod)` is upstream's `ComputePodQOS` (the status value wins when present).

Cgroups: CPU shares from the request (2 minimum, 1024 per core; the limit when no request),
CFS quota from the limit over a 100 ms period (1 ms minimum), memory limit from the limit,
`oom_score_adj` by QoS class (-997 Guaranteed and node-critical, 1000 BestEffort, Burstable
`1000 - 1000*request/capacity` clamped to [3, 999]). The pod cgroup parent is
`/k8py/pod<uid>` (cgroupfs), see `POD_CGROUP_ROOT`.

Errors a user can fix (runAsNonRoot with a root user) raise `env.ContainerConfigError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

from k8py.api import quantity
from k8py.api.qos import pod_qos_class
from k8py.agent.kubelet.env import ContainerConfigError, env_map, expand, mapping_for
from k8py.runtime import cri_pb2

POD_CGROUP_ROOT = "/k8py"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_HASH = "io.kubernetes.container.hash"
RESTART_COUNT = "io.kubernetes.container.restartCount"
TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
TERMINATION_MESSAGE_POLICY = "io.kubernetes.container.terminationMessagePolicy"
DELETION_GRACE_PERIOD = "io.kubernetes.pod.deletionGracePeriod"
TERMINATION_GRACE_PERIOD = "io.kubernetes.pod.terminationGracePeriod"
PRESTOP_HANDLER = "io.kubernetes.container.preStopHandler"
CONTAINER_PORTS = "io.kubernetes.container.ports"

MIN_SHARES, MAX_SHARES, SHARES_PER_CPU = 2, 262144, 1024
QUOTA_PERIOD, MIN_QUOTA = 100000, 1000
GUARANTEED_OOM_SCORE_ADJ, BESTEFFORT_OOM_SCORE_ADJ = -997, 1000
SYSTEM_CRITICAL_PRIORITY = 2000000000

DEFAULT_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger")
MAX_DNS_SEARCHES, MAX_DNS_SEARCH_CHARS, MAX_DNS_SERVERS = 32, 2048, 3
DEFAULT_DNS_OPTIONS = ("ndots:5",)
_PROTOCOLS = {"TCP": cri_pb2.TCP, "UDP": cri_pb2.UDP, "SCTP": cri_pb2.SCTP}
_PROPAGATION = {None: cri_pb2.PROPAGATION_PRIVATE, "None": cri_pb2.PROPAGATION_PRIVATE,
                "HostToContainer": cri_pb2.PROPAGATION_HOST_TO_CONTAINER,
                "Bidirectional": cri_pb2.PROPAGATION_BIDIRECTIONAL}


def pod_cgroup_parent(pod: dict[str, Any]) -> str:
    return f"{POD_CGROUP_ROOT}/pod{pod['metadata']['uid']}"


def log_directory(logs_dir: str, pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return os.path.join(logs_dir, f"{meta.get('namespace', 'default')}_{meta['name']}_"
                                  f"{meta['uid']}")


def format_pod(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', 'default')}({meta.get('uid', '')})"


# --- hostname and DNS ------------------------------------------------------------------------

def _truncate_hostname(name: str) -> str:
    if len(name) <= 63:
        return name
    return name[:63].rstrip("-.")


def hostname_and_domain(pod: dict[str, Any], cluster_domain: str) -> tuple[str, str]:
    """Upstream's `GeneratePodHostNameAndDomain`."""
    spec = pod.get("spec") or {}
    hostname = _truncate_hostname(spec.get("hostname") or pod["metadata"]["name"])
    domain = ""
    if spec.get("subdomain") and cluster_domain:
        domain = (f"{spec['subdomain']}.{pod['metadata'].get('namespace', 'default')}"
                  f".svc.{cluster_domain}")
    return hostname, domain


def sandbox_hostname(pod: dict[str, Any], cluster_domain: str) -> str:
    """The UTS hostname: empty for hostNetwork pods (containerd keeps the node's); the FQDN
    with `setHostnameAsFQDN` (at most 64 characters, as the kernel allows)."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return ""
    hostname, domain = hostname_and_domain(pod, cluster_domain)
    if spec.get("setHostnameAsFQDN") and domain:
        fqdn = f"{hostname}.{domain}"
        if len(fqdn) > 64:
            raise ContainerConfigError(
                f'failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} '
                f'is too long (64 characters is the max, {len(fqdn)} characters requested)')
        return fqdn
    return hostname


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = [s for s in fields[1:] if s != "."] or searches
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, searches, options


@functools.lru_cache(maxsize=4)
def _host_dns_cached(path: str, mtime: float) -> tuple[tuple[str, ...], ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(tuple(part) for part in parse_resolv_conf(f.read()))


def host_dns(path: str = "/etc/resolv.conf") -> tuple[list[str], list[str], list[str]]:
    """The node's resolver settings (re-read when the file changes)."""
    if not path:
        return [], [], []
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return [], [], []
    servers, searches, options = _host_dns_cached(path, mtime)
    return list(servers), list(searches), list(options)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[dict[str, Any]]) -> list[str]:
    options: dict[str, str | None] = {}
    for option in base:
        name, sep, value = option.partition(":")
        options[name] = value if sep else None
    for option in extra:
        options[option.get("name", "")] = option.get("value")
    return [f"{name}:{value}" if value else name for name, value in options.items()]


def dns_config(pod: dict[str, Any], cluster_dns: str | list[str], cluster_domain: str,
               host: tuple[list[str], list[str], list[str]] | None = None,
               ) -> cri_pb2.DNSConfig:
    """Upstream's `GetPodDNS`: the pod's resolver by dnsPolicy, merged with its dnsConfig.
    `host` is the node's (servers, searches, options), `host_dns()` by default."""
    spec = pod.get("spec") or {}
    servers, searches, options = host if host is not None else host_dns()
    servers, searches, options = list(servers), list(searches), list(options)
    cluster_servers = [cluster_dns] if isinstance(cluster_dns, str) else list(cluster_dns)
    cluster_servers = [s for s in cluster_servers if s]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        servers, searches, options = [], [], []
    elif ((policy == "ClusterFirstWithHostNet"
           or (policy == "ClusterFirst" and not spec.get("hostNetwork")))
          and cluster_servers):
        servers = cluster_servers
        if cluster_domain:
            namespace = pod["metadata"].get("namespace", "default")
            searches = _unique([f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}",
                                cluster_domain] + searches)
        options = list(DEFAULT_DNS_OPTIONS)
    # Otherwise Default (or ClusterFirst without a cluster DNS): the node's settings.
    extra = spec.get("dnsConfig")
    if extra:
        servers = _unique(servers + list(extra.get("nameservers") or []))
        searches = _unique(searches + list(extra.get("searches") or []))
        options = _merge_options(options, extra.get("options") or [])
    servers = servers[:MAX_DNS_SERVERS]
    searches = searches[:MAX_DNS_SEARCHES]
    while searches and len(" ".join(searches)) > MAX_DNS_SEARCH_CHARS:
        searches.pop()
    return cri_pb2.DNSConfig(servers=servers, searches=searches, options=options)


# --- the sandbox -----------------------------------------------------------------------------

def _all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return ((spec.get("initContainers") or []) + (spec.get("containers") or [])
            + (spec.get("ephemeralContainers") or []))


def port_mappings(pod: dict[str, Any]) -> list[cri_pb2.PortMapping]:
    """Every container port, as upstream's `MakePortMappings` (a repeated name is skipped)."""
    mappings = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        names: set[str] = set()
        for port in container.get("ports") or []:
            protocol = port.get("protocol") or "TCP"
            name = port.get("name") or (f"{protocol}{port.get('hostIP', '')}:"
                                        f"{port['containerPort']}:{port.get('hostPort', 0)}")
            if name in names:
                continue
            names.add(name)
            mappings.append(cri_pb2.PortMapping(
                protocol=_PROTOCOLS.get(protocol, cri_pb2.TCP),
                container_port=port["containerPort"], host_port=port.get("hostPort", 0),
                host_ip=port.get("hostIP", "")))
    return mappings


def namespace_options(pod: dict[str, Any], target_id: str = "") -> cri_pb2.NamespaceOption:
    """The pod's namespaces; `target_id`, an ephemeral container's target (its
    targetContainerName's running instance), puts the container in that one's PID namespace
    (CRI's TARGET mode), as upstream's kubelet does for `kubectl debug --target`."""
    spec = pod.get("spec") or {}
    if spec.get("hostPID"):
        pid = cri_pb2.NODE
    elif spec.get("shareProcessNamespace"):
        pid = cri_pb2.POD
    elif target_id:
        pid = cri_pb2.TARGET
    else:
        pid = cri_pb2.CONTAINER
    return cri_pb2.NamespaceOption(
        network=cri_pb2.NODE if spec.get("hostNetwork") else cri_pb2.POD,
        pid=pid, ipc=cri_pb2.NODE if spec.get("hostIPC") else cri_pb2.POD,
        target_id=target_id if pid == cri_pb2.TARGET else "")


def _supplemental_groups(pod_sc: dict[str, Any]) -> list[int]:
    groups = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(pod_sc["fsGroup"])
    groups.extend(pod_sc.get("supplementalGroups") or [])
    return groups


def pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    return {**(meta.get("labels") or {}), POD_NAME: meta["name"],
            POD_NAMESPACE: meta.get("namespace", "default"), POD_UID: meta["uid"]}


def sandbox_config(pod: dict[str, Any], node_name: str, config: Any, *, attempt: int = 0,
                   host_dns_settings: tuple[list[str], list[str], list[str]] | None = None,
                   ) -> cri_pb2.PodSandboxConfig:
    """The PodSandboxConfig for `pod` on this node. `config` is the `AgentConfig` (data_dir,
    cluster_dns, cluster_domain; optional `resolv_conf`); `attempt` counts sandboxes made for
    this pod before (upstream bumps it when the sandbox must be recreated)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    domain = getattr(config, "cluster_domain", "cluster.local")
    logs_dir = getattr(config, "logs_dir", None) or os.path.join(config.data_dir, "agent",
                                                                 "logs")
    host = host_dns_settings if host_dns_settings is not None else host_dns(
        getattr(config, "resolv_conf", "/etc/resolv.conf"))
    security = cri_pb2.LinuxSandboxSecurityContext(
        namespace_options=namespace_options(pod),
        supplemental_groups=_supplemental_groups(pod_sc),
        privileged=any((c.get("securityContext") or {}).get("privileged")
                       for c in _all_containers(pod)),
        seccomp=cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.RuntimeDefault))
    if pod_sc.get("runAsUser") is not None:
        security.run_as_user.value = pod_sc["runAsUser"]
    if pod_sc.get("runAsGroup") is not None:
        security.run_as_group.value = pod_sc["runAsGroup"]
    return cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name=meta["name"], uid=meta["uid"],
                                            namespace=meta.get("namespace", "default"),
                                            attempt=attempt),
        hostname=sandbox_hostname(pod, domain),
        log_directory=log_directory(logs_dir, pod),
        dns_config=dns_config(pod, getattr(config, "cluster_dns", ""), domain, host),
        port_mappings=port_mappings(pod),
        labels=pod_labels(pod),
        annotations=dict(meta.get("annotations") or {}),
        linux=cri_pb2.LinuxPodSandboxConfig(
            cgroup_parent=pod_cgroup_parent(pod), security_context=security,
            sysctls={s["name"]: s.get("value", "") for s in pod_sc.get("sysctls") or []}))


# --- QoS and resources -----------------------------------------------------------------------

def qos_class(pod: dict[str, Any]) -> str:
    """The pod's QoS class: its status's (the API server sets it), else computed."""
    return (pod.get("status") or {}).get("qosClass") or pod_qos_class(pod.get("spec") or {})


def milli_cpu_to_shares(milli_cpu: int) -> int:
    if milli_cpu == 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli_cpu * SHARES_PER_CPU // 1000))


def milli_cpu_to_quota(milli_cpu: int, period: int = QUOTA_PERIOD) -> int:
    if milli_cpu == 0:
        return 0
    return max(MIN_QUOTA, milli_cpu * period // 1000)


@functools.lru_cache(maxsize=1)
def machine_memory() -> int:
    """MemTotal of this host in bytes."""
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def oom_score_adj(pod: dict[str, Any], container: dict[str, Any], memory_capacity: int) -> int:
    """Upstream's `GetContainerOOMScoreAdjust`."""
    spec = pod.get("spec") or {}
    if (spec.get("priorityClassName") == "system-node-critical"
            and (spec.get("priority") or 0) >= SYSTEM_CRITICAL_PRIORITY):
        return GUARANTEED_OOM_SCORE_ADJ
    qos = qos_class(pod)
    if qos == "Guaranteed":
        return GUARANTEED_OOM_SCORE_ADJ
    if qos == "BestEffort":
        return BESTEFFORT_OOM_SCORE_ADJ
    resources = container.get("resources") or {}
    request = quantity.amount("memory", (resources.get("requests") or {}).get("memory", 0))
    if not memory_capacity:
        return BESTEFFORT_OOM_SCORE_ADJ - 1
    adjust = 1000 - (1000 * request) // memory_capacity
    if adjust < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if adjust == BESTEFFORT_OOM_SCORE_ADJ:
        return adjust - 1
    return adjust


def linux_resources(pod: dict[str, Any], container: dict[str, Any],
                    memory_capacity: int | None = None) -> cri_pb2.LinuxContainerResources:
    """Cgroup settings from the container's requests and limits (`calculateLinuxResources`)."""
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if "cpu" in requests:
        shares = milli_cpu_to_shares(quantity.milli(requests["cpu"]))
    else:
        shares = milli_cpu_to_shares(quantity.milli(limits.get("cpu", 0)))
    return cri_pb2.LinuxContainerResources(
        cpu_period=QUOTA_PERIOD,
        cpu_quota=milli_cpu_to_quota(quantity.milli(limits.get("cpu", 0))),
        cpu_shares=shares,
        memory_limit_in_bytes=quantity.amount("memory", limits.get("memory", 0)),
        oom_score_adj=oom_score_adj(pod, container, memory_capacity
                                    if memory_capacity is not None else machine_memory()))


# --- security --------------------------------------------------------------------------------

def effective_security_context(pod: dict[str, Any], container: dict[str, Any]
                               ) -> dict[str, Any]:
    """The container's security context with the pod's settings under it, as upstream's
    `DetermineEffectiveSecurityContext`."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    effective = dict(container.get("securityContext") or {})
    for key in ("seLinuxOptions", "windowsOptions", "runAsUser", "runAsGroup", "runAsNonRoot",
                "seccompProfile", "appArmorProfile"):
        if effective.get(key) is None and pod_sc.get(key) is not None:
            effective[key] = pod_sc[key]
    return effective


def verify_run_as_non_root(pod: dict[str, Any], container: dict[str, Any],
                           image_uid: int | None, image_username: str) -> None:
    effective = effective_security_context(pod, container)
    if not effective.get("runAsNonRoot"):
        return
    if effective.get("runAsUser") is not None:
        if effective["runAsUser"] == 0:
            raise ContainerConfigError(
                f'container\'s runAsUser breaks non-root policy (pod: "{format_pod(pod)}", '
                f'container: {container["name"]})')
        return
    if image_uid == 0:
        raise ContainerConfigError(
            f'container has runAsNonRoot and image will run as root (pod: "{format_pod(pod)}", '
            f'container: {container["name"]})')
    if image_uid is None and image_username:
        raise ContainerConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({image_username}), "
            f'cannot verify user is non-root (pod: "{format_pod(pod)}", '
            f'container: {container["name"]})')


def _seccomp(profile: dict[str, Any] | None) -> cri_pb2.SecurityProfile:
    kind = (profile or {}).get("type")
    if kind == "RuntimeDefault":
        return cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.RuntimeDefault)
    if kind == "Localhost":
        return cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.Localhost,
                                       localhost_ref=profile.get("localhostProfile", ""))
    return cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.Unconfined)


def container_security_context(pod: dict[str, Any], container: dict[str, Any],
                               image_uid: int | None = None, image_username: str = "",
                               target_id: str = "",
                               ) -> cri_pb2.LinuxContainerSecurityContext:
    effective = effective_security_context(pod, container)
    caps = effective.get("capabilities") or {}
    privileged = bool(effective.get("privileged"))
    unmasked = effective.get("procMount") == "Unmasked" or privileged
    sc = cri_pb2.LinuxContainerSecurityContext(
        capabilities=cri_pb2.Capability(add_capabilities=caps.get("add") or [],
                                        drop_capabilities=caps.get("drop") or []),
        privileged=privileged,
        readonly_rootfs=bool(effective.get("readOnlyRootFilesystem")),
        namespace_options=namespace_options(pod, target_id),
        supplemental_groups=_supplemental_groups(
            (pod.get("spec") or {}).get("securityContext") or {}),
        no_new_privs=effective.get("allowPrivilegeEscalation") is False,
        masked_paths=() if unmasked else DEFAULT_MASKED_PATHS,
        readonly_paths=() if unmasked else DEFAULT_READONLY_PATHS,
        seccomp=_seccomp(effective.get("seccompProfile")))
    if effective.get("runAsUser") is not None:
        sc.run_as_user.value = effective["runAsUser"]
    elif image_uid is not None:
        sc.run_as_user.value = image_uid
    else:
        sc.run_as_username = image_username
    if effective.get("runAsGroup") is not None:
        sc.run_as_group.value = effective["runAsGroup"]
    se = effective.get("seLinuxOptions")
    if se:
        sc.selinux_options.CopyFrom(cri_pb2.SELinuxOption(
            user=se.get("user", ""), role=se.get("role", ""), type=se.get("type", ""),
            level=se.get("level", "")))
    return sc


# --- the container ---------------------------------------------------------------------------

def container_hash(container: dict[str, Any]) -> str:
    """A stable hash of the container spec (hex), compared to decide whether a running
    container still matches its spec."""
    encoded = json.dumps(container, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def container_labels(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    return {POD_NAME: meta["name"], POD_NAMESPACE: meta.get("namespace", "default"),
            POD_UID: meta["uid"], CONTAINER_NAME: container["name"]}


def container_annotations(pod: dict[str, Any], container: dict[str, Any],
                          restart_count: int) -> dict[str, str]:
    spec = pod.get("spec") or {}
    annotations = {
        CONTAINER_HASH: container_hash(container),
        RESTART_COUNT: str(restart_count),
        TERMINATION_MESSAGE_PATH: container.get("terminationMessagePath",
                                                "/dev/termination-log"),
        TERMINATION_MESSAGE_POLICY: container.get("terminationMessagePolicy", "File"),
    }
    if pod["metadata"].get("deletionGracePeriodSeconds") is not None:
        annotations[DELETION_GRACE_PERIOD] = str(pod["metadata"]["deletionGracePeriodSeconds"])
    if spec.get("terminationGracePeriodSeconds") is not None:
        annotations[TERMINATION_GRACE_PERIOD] = str(spec["terminationGracePeriodSeconds"])
    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    if pre_stop:
        annotations[PRESTOP_HANDLER] = json.dumps(pre_stop, separators=(",", ":"))
    if container.get("ports"):
        annotations[CONTAINER_PORTS] = json.dumps(container["ports"], separators=(",", ":"))
    return annotations


def command_and_args(container: dict[str, Any], envs: list[cri_pb2.KeyValue]
                     ) -> tuple[list[str], list[str]]:
    """Kubernetes `command` replaces the image's entrypoint (CRI command), `args` its cmd;
    `$(VAR)` references are expanded from the container's environment."""
    mapping = mapping_for(env_map(envs))
    return ([expand(part, mapping) for part in container.get("command") or []],
            [expand(part, mapping) for part in container.get("args") or []])


def container_config(pod: dict[str, Any], container: dict[str, Any],
                     sandbox_config: cri_pb2.PodSandboxConfig, mounts: list[cri_pb2.Mount],
                     envs: list[cri_pb2.KeyValue], restart_count: int, log_path: str, *,
                     image_ref: str = "", image_uid: int | None = None,
                     image_username: str = "", memory_capacity: int | None = None,
                     target_id: str = "") -> cri_pb2.ContainerConfig:
    """The ContainerConfig for one run of `container`. `image_ref` is the image id the runtime
    resolved (the spec's image when empty); `image_uid`/`image_username` are the image's user
    (for the runAsNonRoot check); `memory_capacity` the node's memory (for Burstable
    oom_score_adj; this host's MemTotal by default). `log_path` is relative to the sandbox's
    log directory (`<container>/<restart>.log`); `target_id` the container whose PID
    namespace an ephemeral container joins. Raises ContainerConfigError."""
    verify_run_as_non_root(pod, container, image_uid, image_username)
    command, args = command_and_args(container, envs)
    return cri_pb2.ContainerConfig(
        metadata=cri_pb2.ContainerMetadata(name=container["name"], attempt=restart_count),
        image=cri_pb2.ImageSpec(image=image_ref or container["image"],
                                user_specified_image=container["image"]),
        command=command, args=args,
        working_dir=container.get("workingDir", ""),
        envs=envs, mounts=mounts,
        labels=container_labels(pod, container),
        annotations=container_annotations(pod, container, restart_count),
        log_path=log_path,
        stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=cri_pb2.LinuxContainerConfig(
            resources=linux_resources(pod, container, memory_capacity),
            security_context=container_security_context(pod, container, image_uid,
                                                         image_username, target_id)))


def mount_propagation(value: str | None) -> int:
    return _PROPAGATION.get(value, cri_pb2.PROPAGATION_PRIVATE)
