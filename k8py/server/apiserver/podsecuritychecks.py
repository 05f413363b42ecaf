"""The Pod Security Standards as upstream's pod-security-admission checks them (its
`policy` package, v1.32/v1.33): one function per check and policy version, over a pod's
metadata and spec as JSON documents.

A check has an id, a level (`baseline` or `restricted`) and versions: the first policy
version each of its revisions applies to (`v1.19` seccomp fields, `v1.25` Windows pods
exempt, ...). Evaluating a pod at a level and version (`evaluate`) runs, for that version,
the newest revision of every check of the level and of `baseline` below it, except the
baseline checks a restricted check replaces (`capabilities_restricted` replaces
`capabilities_baseline`, `seccompProfile_restricted` the baseline one, `restrictedVolumes`
`hostPathVolumes`). `latest` and any version past the newest revision are the newest
revisions. Checks run in upstream's order (baseline ids sorted, then restricted ids sorted),
so the violation texts, joined by `aggregate` as upstream joins them, are upstream's word
for word: `host namespaces (hostNetwork=true), privileged (container "c" must not set
securityContext.privileged=true)`.

A field is "set" when its key is there and not null (Go's non-nil pointer); the checks
only read, and never see invalid types: admission validates after the kind's validation.
Upstream's relaxation for user-namespaced pods is behind an alpha feature gate, off by
default, so it is not here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

Obj = dict[str, Any]
# (reason, detail) of a failed check, or None when the pod passes it
Violation = tuple[str, str]
CheckFn = Callable[[Obj, Obj], Violation | None]

BASELINE, RESTRICTED, PRIVILEGED = "baseline", "restricted", "privileged"


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    level: str
    # (first minor version of v1 it applies to, its function), oldest first
    versions: tuple[tuple[int, CheckFn], ...]
    # the baseline checks this restricted one replaces, from its first version on
    overrides: tuple[str, ...] = ()


# --- how upstream words things -------------------------------------------------------------

def join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def pluralize(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def containers_phrase(names: list[str]) -> str:
    return f"{pluralize('container', 'containers', len(names))} {join_quote(names)}"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote)."""
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


# --- what the checks read ------------------------------------------------------------------

def containers(spec: Obj) -> Iterator[Obj]:
    """Init containers, containers, then ephemeral containers (upstream's visit order)."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or ()


def pod_context(spec: Obj) -> Obj:
    return spec.get("securityContext") or {}


def context(container: Obj) -> Obj | None:
    return container.get("securityContext")


def is_windows(spec: Obj) -> bool:
    return ((spec.get("os") or {}).get("name")) == "windows"


def setters(pod_bad: bool, bad_containers: list[str]) -> list[str]:
    """"pod" and/or `container(s) "a", "b"`: who set a forbidden value."""
    found = ["pod"] if pod_bad else []
    if bad_containers:
        found.append(containers_phrase(bad_containers))
    return found


# --- baseline ------------------------------------------------------------------------------

APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def app_armor_profile_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    def bad_type(profile: Obj | None) -> bool:
        return profile is not None and profile.get("type") not in ("RuntimeDefault",
                                                                     "Localhost")
    bad_values: set[str] = set()
    pod_profile = pod_context(spec).get("appArmorProfile")
    if bad_type(pod_profile):
        bad_values.add(pod_profile.get("type") or "")
    bad_containers = []
    for container in containers(spec):
        profile = (context(container) or {}).get("appArmorProfile")
        if bad_type(profile):
            bad_containers.append(container["name"])
            bad_values.add(profile.get("type") or "")
    found = setters(bad_type(pod_profile), bad_containers)
    annotations = sorted(
        f"{key}={go_quote(value)}" for key, value in (metadata.get("annotations") or {}).items()
        if key.startswith(APPARMOR_ANNOTATION_PREFIX) and value
        and value != "runtime/default" and not value.startswith("localhost/"))
    values = sorted(bad_values) + annotations
    if annotations:
        found.append(pluralize("annotation", "annotations", len(annotations)))
    if not found:
        return None
    return (pluralize("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
            f"{' and '.join(found)} must not set AppArmor profile type to {join_quote(values)}")


CAPABILITIES_ALLOWED_1_0 = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    bad_containers, added = [], set()
    for container in containers(spec):
        capabilities = (context(container) or {}).get("capabilities") or {}
        extra = [c for c in capabilities.get("add") or () if c not in CAPABILITIES_ALLOWED_1_0]
        if extra:
            bad_containers.append(container["name"])
            added.update(extra)
    if not bad_containers:
        return None
    return ("non-default capabilities",
            f"{containers_phrase(bad_containers)} must not include "
            f"{join_quote(sorted(added))} in securityContext.capabilities.add")


def host_namespaces_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    shared = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC")
              if spec.get(key) is True]
    return ("host namespaces", ", ".join(shared)) if shared else None


def host_path_volumes_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    names = [v["name"] for v in spec.get("volumes") or () if v.get("hostPath") is not None]
    if not names:
        return None
    return "hostPath volumes", f"{pluralize('volume', 'volumes', len(names))} {join_quote(names)}"


def host_ports_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    bad_containers, ports = [], set()
    for container in containers(spec):
        used = [str(p["hostPort"]) for p in container.get("ports") or () if p.get("hostPort")]
        if used:
            bad_containers.append(container["name"])
            ports.update(used)
    if not bad_containers:
        return None
    return ("hostPort",
            f"{containers_phrase(bad_containers)} "
            f"{pluralize('uses', 'use', len(bad_containers))} "
            f"{pluralize('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}")


def privileged_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    bad = [c["name"] for c in containers(spec) if (context(c) or {}).get("privileged") is True]
    if not bad:
        return None
    return "privileged", f"{containers_phrase(bad)} must not set securityContext.privileged=true"


def proc_mount_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    bad_containers, types = [], set()
    for container in containers(spec):
        proc_mount = (context(container) or {}).get("procMount")
        if proc_mount is not None and proc_mount != "Default":
            bad_containers.append(container["name"])
            types.add(proc_mount)
    if not bad_containers:
        return None
    return ("procMount", f"{containers_phrase(bad_containers)} must not set "
                         f"securityContext.procMount to {join_quote(sorted(types))}")


SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SELINUX_TYPES_1_31 = SELINUX_TYPES_1_0 | {"container_engine_t"}


def se_linux_options(allowed: frozenset[str]) -> CheckFn:
    def check(metadata: Obj, spec: Obj) -> Violation | None:
        bad_types: set[str] = set()
        set_user = set_role = False

        def valid(options: Obj) -> bool:
            nonlocal set_user, set_role
            ok = True
            if (options.get("type") or "") not in allowed:
                ok = False
                bad_types.add(options.get("type") or "")
            if options.get("user"):
                ok, set_user = False, True
            if options.get("role"):
                ok, set_role = False, True
            return ok

        pod_options = pod_context(spec).get("seLinuxOptions")
        pod_bad = pod_options is not None and not valid(pod_options)
        bad_containers = []
        for container in containers(spec):
            options = (context(container) or {}).get("seLinuxOptions")
            if options is not None and not valid(options):
                bad_containers.append(container["name"])
        found = setters(pod_bad, bad_containers)
        if not found:
            return None
        data = []
        if bad_types:
            data.append(f"{pluralize('type', 'types', len(bad_types))} "
                        f"{join_quote(sorted(bad_types))}")
        if set_user:
            data.append("user may not be set")
        if set_role:
            data.append("role may not be set")
        return ("seLinuxOptions", f"{' and '.join(found)} set forbidden "
                                  f"securityContext.seLinuxOptions: {'; '.join(data)}")
    return check


SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"
SECCOMP_TYPES = ("RuntimeDefault", "Localhost")


def seccomp_profile_baseline_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    """Before v1.19: the alpha annotations."""
    annotations = metadata.get("annotations") or {}
    keys = [SECCOMP_POD_ANNOTATION] + [SECCOMP_CONTAINER_ANNOTATION_PREFIX + c["name"]
                                       for c in containers(spec)]
    forbidden = sorted({
        f"{key}={go_quote(annotations[key])}" for key in keys if key in annotations
        and annotations[key] not in ("runtime/default", "docker/default")
        and not annotations[key].startswith("localhost/")})
    if not forbidden:
        return None
    return ("seccompProfile", f"forbidden {pluralize('annotation', 'annotations', len(forbidden))} "
                              f"{', '.join(forbidden)}")


def _seccomp_explicitly_bad(spec: Obj) -> tuple[list[str], set[str], bool, list[str]]:
    """(setters of a forbidden type, the types, whether the pod sets an allowed one, the
    containers that set none)."""
    bad_values: set[str] = set()
    pod_profile = pod_context(spec).get("seccompProfile")
    pod_bad = pod_profile is not None and pod_profile.get("type") not in SECCOMP_TYPES
    if pod_bad:
        bad_values.add(pod_profile.get("type") or "")
    bad_containers, unset = [], []
    for container in containers(spec):
        profile = (context(container) or {}).get("seccompProfile")
        if profile is None:
            unset.append(container["name"])
        elif profile.get("type") not in SECCOMP_TYPES:
            bad_containers.append(container["name"])
            bad_values.add(profile.get("type") or "")
    return (setters(pod_bad, bad_containers), bad_values,
            pod_profile is not None and not pod_bad, unset)


def _seccomp_forbidden(found: list[str], values: set[str]) -> Violation:
    return ("seccompProfile", f"{' and '.join(found)} must not set "
                              f"securityContext.seccompProfile.type to {join_quote(sorted(values))}")


def seccomp_profile_baseline_1_19(metadata: Obj, spec: Obj) -> Violation | None:
    found, values, _, _ = _seccomp_explicitly_bad(spec)
    return _seccomp_forbidden(found, values) if found else None


SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                         "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                         "net.ipv4.ip_unprivileged_port_start"})
SYSCTLS_1_27 = SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
SYSCTLS_1_29 = SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                               "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SYSCTLS_1_32 = SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}


def sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(metadata: Obj, spec: Obj) -> Violation | None:
        forbidden = [s.get("name", "") for s in pod_context(spec).get("sysctls") or ()
                     if s.get("name", "") not in allowed]
        return ("forbidden sysctls", ", ".join(forbidden)) if forbidden else None
    return check


def windows_host_process_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    def host_process(security_context: Obj | None) -> bool:
        return ((security_context or {}).get("windowsOptions") or {}).get("hostProcess") is True
    found = setters(host_process(pod_context(spec)),
                    [c["name"] for c in containers(spec) if host_process(context(c))])
    if not found:
        return None
    return ("hostProcess", f"{' and '.join(found)} must not set "
                           "securityContext.windowsOptions.hostProcess=true")


# --- restricted ----------------------------------------------------------------------------

def exempting_windows(check: CheckFn) -> CheckFn:
    """From v1.25 on, a pod with spec.os.name=windows passes the Linux-only checks (its
    validation forbids those fields)."""
    def windows_exempt(metadata: Obj, spec: Obj) -> Violation | None:
        return None if is_windows(spec) else check(metadata, spec)
    return windows_exempt


def allow_privilege_escalation_1_8(metadata: Obj, spec: Obj) -> Violation | None:
    bad = [c["name"] for c in containers(spec)
           if (context(c) or {}).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return ("allowPrivilegeEscalation != false",
            f"{containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false")


def capabilities_restricted_1_22(metadata: Obj, spec: Obj) -> Violation | None:
    missing_drop, adding, forbidden = [], [], set()
    for container in containers(spec):
        capabilities = (context(container) or {}).get("capabilities")
        if capabilities is None:
            missing_drop.append(container["name"])
            continue
        if "ALL" not in (capabilities.get("drop") or ()):
            missing_drop.append(container["name"])
        extra = [c for c in capabilities.get("add") or () if c != "NET_BIND_SERVICE"]
        if extra:
            adding.append(container["name"])
            forbidden.update(extra)
    details = []
    if missing_drop:
        details.append(f'{containers_phrase(missing_drop)} must set '
                       'securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{containers_phrase(adding)} must not include "
                       f"{join_quote(sorted(forbidden))} in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


ALLOWED_VOLUME_SOURCES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                          "persistentVolumeClaim", "projected", "secret")
RESTRICTED_VOLUME_SOURCES = (
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
    "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume",
    "scaleIO", "storageos")


def restricted_volumes_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    """Only the inline sources v1.33 allows (`image` included: nothing on a host)."""
    bad_volumes, types = [], set()
    for volume in spec.get("volumes") or ():
        if any(volume.get(key) is not None for key in ALLOWED_VOLUME_SOURCES):
            continue
        bad_volumes.append(volume["name"])
        types.add(next((key for key in RESTRICTED_VOLUME_SOURCES
                        if volume.get(key) is not None), "unknown"))
    if not bad_volumes:
        return None
    return ("restricted volume types",
            f"{pluralize('volume', 'volumes', len(bad_volumes))} {join_quote(bad_volumes)} "
            f"{pluralize('uses', 'use', len(bad_volumes))} "
            f"{pluralize('restricted volume type', 'restricted volume types', len(types))} "
            f"{join_quote(sorted(types))}")


def run_as_non_root_1_0(metadata: Obj, spec: Obj) -> Violation | None:
    pod_value = pod_context(spec).get("runAsNonRoot")
    explicit, implicit = [], []
    for container in containers(spec):
        value = (context(container) or {}).get("runAsNonRoot")
        if value is False:
            explicit.append(container["name"])
        elif value is None and pod_value is not True:
            implicit.append(container["name"])
    found = setters(pod_value is False, explicit)
    if found:
        return ("runAsNonRoot != true",
                f"{' and '.join(found)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true",
                f"pod or {containers_phrase(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def run_as_user_1_23(metadata: Obj, spec: Obj) -> Violation | None:
    found = setters(pod_context(spec).get("runAsUser") == 0,
                    [c["name"] for c in containers(spec)
                     if (context(c) or {}).get("runAsUser") == 0])
    return ("runAsUser=0", f"{' and '.join(found)} must not set runAsUser=0") if found else None


def seccomp_profile_restricted_1_19(metadata: Obj, spec: Obj) -> Violation | None:
    found, values, pod_set, unset = _seccomp_explicitly_bad(spec)
    if found:
        return _seccomp_forbidden(found, values)
    if unset and not pod_set:
        return ("seccompProfile", f"pod or {containers_phrase(unset)} must set "
                                  'securityContext.seccompProfile.type to "RuntimeDefault" '
                                  'or "Localhost"')
    return None


# --- the registry --------------------------------------------------------------------------

CHECKS = (
    Check("allowPrivilegeEscalation", RESTRICTED, (
        (8, allow_privilege_escalation_1_8),
        (25, exempting_windows(allow_privilege_escalation_1_8)))),
    Check("appArmorProfile", BASELINE, ((0, app_armor_profile_1_0),)),
    Check("capabilities_baseline", BASELINE, ((0, capabilities_baseline_1_0),)),
    Check("capabilities_restricted", RESTRICTED, (
        (22, capabilities_restricted_1_22),
        (25, exempting_windows(capabilities_restricted_1_22))),
        overrides=("capabilities_baseline",)),
    Check("hostNamespaces", BASELINE, ((0, host_namespaces_1_0),)),
    Check("hostPathVolumes", BASELINE, ((0, host_path_volumes_1_0),)),
    Check("hostPorts", BASELINE, ((0, host_ports_1_0),)),
    Check("privileged", BASELINE, ((0, privileged_1_0),)),
    Check("procMount", BASELINE, ((0, proc_mount_1_0),)),
    Check("restrictedVolumes", RESTRICTED, ((0, restricted_volumes_1_0),),
          overrides=("hostPathVolumes",)),
    Check("runAsNonRoot", RESTRICTED, ((0, run_as_non_root_1_0),)),
    Check("runAsUser", RESTRICTED, ((23, run_as_user_1_23),)),
    Check("seLinuxOptions", BASELINE, (
        (0, se_linux_options(SELINUX_TYPES_1_0)), (31, se_linux_options(SELINUX_TYPES_1_31)))),
    Check("seccompProfile_baseline", BASELINE, (
        (0, seccomp_profile_baseline_1_0), (19, seccomp_profile_baseline_1_19))),
    Check("seccompProfile_restricted", RESTRICTED, (
        (19, seccomp_profile_restricted_1_19),
        (25, exempting_windows(seccomp_profile_restricted_1_19))),
        overrides=("seccompProfile_baseline",)),
    Check("sysctls", BASELINE, (
        (0, sysctls(SYSCTLS_1_0)), (27, sysctls(SYSCTLS_1_27)), (29, sysctls(SYSCTLS_1_29)),
        (32, sysctls(SYSCTLS_1_32)))),
    Check("windowsHostProcess", BASELINE, ((0, windows_host_process_1_0),)),
)


@functools.lru_cache(maxsize=None)
def checks_for(level: str, minor: int | None) -> tuple[CheckFn, ...]:
    """The functions a pod is checked with at a level and version (v1.<minor>; None is
    latest), in upstream's order."""
    if level == PRIVILEGED:
        return ()

    def revision(check: Check) -> CheckFn | None:
        applicable = [fn for first, fn in check.versions if minor is None or first <= minor]
        return applicable[-1] if applicable else None

    chosen = {c.id: (c, revision(c)) for c in CHECKS if revision(c) is not None}
    overridden = {o for c, _ in chosen.values() if c.level == RESTRICTED for o in c.overrides}
    ordered = sorted((c for c, _ in chosen.values() if c.level == BASELINE),
                     key=lambda c: c.id)
    if level == RESTRICTED:
        ordered = [c for c in ordered if c.id not in overridden] + sorted(
            (c for c, _ in chosen.values() if c.level == RESTRICTED), key=lambda c: c.id)
    return tuple(chosen[c.id][1] for c in ordered)


def evaluate(level: str, minor: int | None, metadata: Obj, spec: Obj) -> list[Violation]:
    """The violations of a pod (its metadata and spec) at a level and version."""
    metadata, spec = metadata or {}, spec or {}
    return [v for fn in checks_for(level, minor) if (v := fn(metadata, spec)) is not None]


def reasons(violations: list[Violation]) -> str:
    """`host namespaces, privileged`: the summary for many pods (ForbiddenReason)."""
    return ", ".join(reason for reason, _ in violations)


def details(violations: list[Violation]) -> str:
    """`host namespaces (hostNetwork=true), privileged (...)`: for one pod (ForbiddenDetail)."""
    return ", ".join(f"{reason} ({detail})" if detail else reason
                     for reason, detail in violations)
