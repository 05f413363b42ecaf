"""The Pod Security Standards checks and policy labels, against upstream's texts: each
check alone, the levels, version pinning, the aggregation of violations, and the namespace
labels (parsing, defaulting warn to enforce, errors)."""

from __future__ import annotations

import pytest

from k8py.server.apiserver import podsecurity as ps
from k8py.server.apiserver import podsecuritychecks as checks


def container(name="c", ports=None, **security):
    found = {"name": name, "image": "busybox"}
    if security:
        found["securityContext"] = security
    if ports:
        found["ports"] = ports
    return found


def spec(*containers_, **fields):
    return {"containers": list(containers_) or [container()], **fields}


# a container that passes restricted on its own
GOOD = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def violations(level, the_spec, minor=None, metadata=None):
    return checks.evaluate(level, minor, metadata or {}, the_spec)


def detail(level, the_spec, minor=None, metadata=None):
    return checks.details(violations(level, the_spec, minor, metadata))


# --- baseline, one check at a time ---------------------------------------------------------

@pytest.mark.parametrize("fields, expected", [
    ({"hostNetwork": True}, "host namespaces (hostNetwork=true)"),
    ({"hostNetwork": True, "hostPID": True, "hostIPC": True},
     "host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)"),
    ({"hostNetwork": False}, ""),
    ({"volumes": [{"name": "a", "hostPath": {"path": "/"}}, {"name": "b", "emptyDir": {}},
                  {"name": "c", "hostPath": {"path": "/x"}}]},
     'hostPath volumes (volumes "a", "c")'),
    ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                      {"name": "net.ipv4.tcp_rmem", "value": "1"},
                                      {"name": "kernel.sem", "value": "1"}]}},
     "forbidden sysctls (kernel.msgmax, kernel.sem)"),
    ({"securityContext": {"windowsOptions": {"hostProcess": True}}},
     "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"),
    ({"securityContext": {"seLinuxOptions": {"type": "foo", "user": "u", "role": "r"}}},
     'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "foo"; '
     "user may not be set; role may not be set)"),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    ({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
     'forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")'),
])
def test_baseline_pod_level_checks(fields, expected):
    assert detail("baseline", spec(**fields)) == expected


@pytest.mark.parametrize("containers_, expected", [
    ([container("x", privileged=True)],
     'privileged (container "x" must not set securityContext.privileged=true)'),
    ([container("x", privileged=True), container("y", privileged=False),
      container("z", privileged=True)],
     'privileged (containers "x", "z" must not set securityContext.privileged=true)'),
    ([container("x", capabilities={"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]}),
      container("y", capabilities={"add": ["NET_ADMIN"]})],
     'non-default capabilities (containers "x", "y" must not include "NET_ADMIN", "NET_RAW", '
     '"SYS_ADMIN" in securityContext.capabilities.add)'),
    ([container("x", capabilities={"add": ["CHOWN", "KILL"]})], ""),
    ([container("x", ports=[{"containerPort": 80, "hostPort": 8080},
                            {"containerPort": 81, "hostPort": 10}])],
     'hostPort (container "x" uses hostPorts 10, 8080)'),
    ([container("x", ports=[{"containerPort": 80, "hostPort": 80}]),
      container("y", ports=[{"containerPort": 80, "hostPort": 80}])],
     'hostPort (containers "x", "y" use hostPort 80)'),
    ([container("x", ports=[{"containerPort": 80}])], ""),
    ([container("x", procMount="Unmasked"), container("y", procMount="Default")],
     'procMount (container "x" must not set securityContext.procMount to "Unmasked")'),
    ([container("x", seLinuxOptions={"type": "container_engine_t"}),
      container("y", seLinuxOptions={"type": "bar"}), container("z", seLinuxOptions={
          "user": "u"})],
     'seLinuxOptions (containers "y", "z" set forbidden securityContext.seLinuxOptions: '
     'type "bar"; user may not be set)'),
    ([container("x", seccompProfile={"type": "Localhost", "localhostProfile": "p"}),
      container("y", seccompProfile={"type": "Unconfined"})],
     'seccompProfile (container "y" must not set securityContext.seccompProfile.type to '
     '"Unconfined")'),
    ([container("x", windowsOptions={"hostProcess": True})],
     'hostProcess (container "x" must not set securityContext.windowsOptions.hostProcess=true)'),
    ([container("x", appArmorProfile={"type": "Unconfined"}),
      container("y", appArmorProfile={"type": "RuntimeDefault"})],
     'forbidden AppArmor profile (container "x" must not set AppArmor profile type to '
     '"Unconfined")'),
])
def test_baseline_container_checks(containers_, expected):
    assert detail("baseline", spec(*containers_)) == expected


def test_pod_and_containers_are_named_together():
    the_spec = spec(container("a", seccompProfile={"type": "Unconfined"}),
                    securityContext={"seccompProfile": {"type": "Bogus"}})
    assert detail("baseline", the_spec) == (
        'seccompProfile (pod and container "a" must not set securityContext.seccompProfile.type'
        ' to "Bogus", "Unconfined")')


def test_init_and_ephemeral_containers_are_checked_in_order():
    the_spec = spec(container("main", privileged=True),
                    initContainers=[container("init", privileged=True)],
                    ephemeralContainers=[container("debug", privileged=True)])
    assert detail("baseline", the_spec) == (
        'privileged (containers "init", "main", "debug" must not set '
        "securityContext.privileged=true)")


def test_app_armor_annotations():
    metadata = {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/a": "runtime/default",
        "container.apparmor.security.beta.kubernetes.io/c": "localhost/mine",
        "container.apparmor.security.beta.kubernetes.io/d": "bad\n"}}
    the_spec = spec(container("x", appArmorProfile={"type": "Unconfined"}))
    assert detail("baseline", the_spec, metadata=metadata) == (
        'forbidden AppArmor profiles (container "x" and annotations must not set AppArmor '
        'profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/b='
        '"unconfined"", "container.apparmor.security.beta.kubernetes.io/d="bad\\n"")')
    # (upstream quotes the list's items without escaping, the values with Go's %q)


# --- restricted ----------------------------------------------------------------------------

def test_restricted_aggregates_in_upstreams_order():
    the_spec = spec(container("x", privileged=True), hostNetwork=True)
    assert detail("restricted", the_spec) == (
        'host namespaces (hostNetwork=true), '
        'privileged (container "x" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "x" must set '
        'securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "x" must set '
        'securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "x" must set '
        'securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "x" must set securityContext.seccompProfile.type '
        'to "RuntimeDefault" or "Localhost")')
    assert checks.reasons(violations("restricted", the_spec)) == (
        "host namespaces, privileged, allowPrivilegeEscalation != false, unrestricted "
        "capabilities, runAsNonRoot != true, seccompProfile")


def test_a_pod_that_passes_restricted():
    assert violations("restricted", spec(container("x", **GOOD))) == []
    pod_level = spec(container("x", allowPrivilegeEscalation=False,
                               capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
                     securityContext={"runAsNonRoot": True,
                                      "seccompProfile": {"type": "Localhost"}})
    assert violations("restricted", pod_level) == []


@pytest.mark.parametrize("containers_, fields, expected", [
    ([container("x", **{**GOOD, "capabilities": {"drop": ["ALL"], "add": ["NET_RAW", "CHOWN"]}}),
      container("y", **{**GOOD, "capabilities": {"drop": ["NET_RAW"]}})], {},
     'unrestricted capabilities (container "y" must set securityContext.capabilities.drop='
     '["ALL"]; container "x" must not include "CHOWN", "NET_RAW" in '
     "securityContext.capabilities.add)"),
    ([container("x", **{**GOOD, "runAsNonRoot": False})],
     {"securityContext": {"runAsNonRoot": False}},
     'runAsNonRoot != true (pod and container "x" must not set '
     "securityContext.runAsNonRoot=false)"),
    ([container("x", **{**GOOD, "runAsUser": 0})], {"securityContext": {"runAsUser": 0}},
     'runAsUser=0 (pod and container "x" must not set runAsUser=0)'),
    ([container("x", **{**GOOD, "runAsUser": 1000})], {}, ""),
    ([container("x", **{**GOOD, "allowPrivilegeEscalation": True})], {},
     'allowPrivilegeEscalation != false (container "x" must set '
     "securityContext.allowPrivilegeEscalation=false)"),
    ([container("x", **GOOD)], {"volumes": [
        {"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s",
                                                                        "path": "/"}},
        {"name": "ok", "configMap": {"name": "c"}}, {"name": "i", "image": {"reference": "r"}}]},
     'restricted volume types (volumes "h", "n" use restricted volume types "hostPath", '
     '"nfs")'),
    ([container("x", **{k: v for k, v in GOOD.items() if k != "seccompProfile"}),
      container("y", **GOOD)], {},
     'seccompProfile (pod or container "x" must set securityContext.seccompProfile.type to '
     '"RuntimeDefault" or "Localhost")'),
])
def test_restricted_checks(containers_, fields, expected):
    assert detail("restricted", spec(*containers_, **fields)) == expected


def test_windows_pods_skip_the_linux_only_checks_from_v1_25():
    windows = spec(container("x", runAsNonRoot=True), os={"name": "windows"})
    assert violations("restricted", windows) == []
    assert [r for r, _ in violations("restricted", windows, minor=24)] == [
        "allowPrivilegeEscalation != false", "unrestricted capabilities", "seccompProfile"]


def test_privileged_checks_nothing():
    assert violations("privileged", spec(container("x", privileged=True), hostPID=True)) == []


# --- versions ------------------------------------------------------------------------------

def test_sysctls_allowed_grow_with_the_version():
    the_spec = spec(securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"},
                                                 {"name": "net.ipv4.tcp_fin_timeout",
                                                  "value": "1"}]})
    assert detail("baseline", the_spec, minor=31) == "forbidden sysctls (net.ipv4.tcp_rmem)"
    assert detail("baseline", the_spec, minor=28) == (
        "forbidden sysctls (net.ipv4.tcp_rmem, net.ipv4.tcp_fin_timeout)")
    assert detail("baseline", the_spec, minor=32) == ""
    assert detail("baseline", the_spec) == ""


def test_selinux_container_engine_type_from_v1_31():
    the_spec = spec(container("x", seLinuxOptions={"type": "container_engine_t"}))
    assert detail("baseline", the_spec, minor=30) == (
        'seLinuxOptions (container "x" set forbidden securityContext.seLinuxOptions: '
        'type "container_engine_t")')
    assert detail("baseline", the_spec, minor=31) == ""


def test_seccomp_annotations_before_v1_19():
    metadata = {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                                "container.seccomp.security.alpha.kubernetes.io/x": "foo",
                                "container.seccomp.security.alpha.kubernetes.io/y":
                                    "docker/default"}}
    the_spec = spec(container("x"), container("y"),
                    securityContext={"seccompProfile": {"type": "Unconfined"}})
    assert detail("baseline", the_spec, minor=18, metadata=metadata) == (
        'seccompProfile (forbidden annotations container.seccomp.security.alpha.kubernetes.io'
        '/x="foo", seccomp.security.alpha.kubernetes.io/pod="unconfined")')
    assert detail("baseline", the_spec, minor=19, metadata=metadata) == (
        'seccompProfile (pod must not set securityContext.seccompProfile.type to '
        '"Unconfined")')


def test_restricted_checks_arrive_with_their_versions():
    reasons = {minor: [r for r, _ in violations("restricted", spec(container(
        "x", runAsUser=0, capabilities={"add": ["SYS_ADMIN"]})), minor=minor)]
        for minor in (0, 8, 19, 22, 23)}
    assert reasons[0] == ["non-default capabilities", "runAsNonRoot != true"]
    assert reasons[8] == ["non-default capabilities", "allowPrivilegeEscalation != false",
                          "runAsNonRoot != true"]
    assert reasons[19][-1] == "seccompProfile"
    # from v1.22 the restricted capabilities check replaces the baseline one
    assert reasons[22] == ["allowPrivilegeEscalation != false", "unrestricted capabilities",
                           "runAsNonRoot != true", "seccompProfile"]
    assert reasons[23] == ["allowPrivilegeEscalation != false", "unrestricted capabilities",
                           "runAsNonRoot != true", "runAsUser=0", "seccompProfile"]
    # a version past every check's newest revision is latest
    assert checks.checks_for("restricted", 99) == checks.checks_for("restricted", None)


def test_go_quote():
    assert checks.go_quote('a"b\\c\n\x01\x7fé\u200b') == '"a\\"b\\\\c\\n\\x01\\x7fé\\u200b"'


# --- namespace labels ----------------------------------------------------------------------

def labels(**modes):
    return {ps.PREFIX + mode.replace("_", "-"): value for mode, value in modes.items()}


def test_no_labels_is_privileged():
    policy, found = ps.policy_from_labels(None)
    assert policy.fully_privileged() and found == []
    assert str(policy.enforce) == "privileged:latest"


def test_labels_pick_levels_and_versions():
    policy, found = ps.policy_from_labels(labels(enforce="baseline", enforce_version="v1.24",
                                                 audit="restricted", warn="restricted",
                                                 warn_version="latest"))
    assert found == []
    assert (str(policy.enforce), str(policy.audit), str(policy.warn)) == (
        "baseline:v1.24", "restricted:latest", "restricted:latest")


def test_warn_follows_a_stricter_enforce_unless_labelled():
    policy, _ = ps.policy_from_labels(labels(enforce="restricted", enforce_version="v1.30"))
    assert str(policy.warn) == "restricted:v1.30"
    policy, _ = ps.policy_from_labels(labels(enforce="restricted", warn_version="v1.2"))
    assert str(policy.warn) == "restricted:v1.2"
    policy, _ = ps.policy_from_labels(labels(enforce="restricted", warn="baseline"))
    assert str(policy.warn) == "baseline:latest"
    policy, _ = ps.policy_from_labels(labels(enforce="bogus"))
    assert str(policy.enforce) == "restricted:latest" and str(policy.warn) == "privileged:latest"


@pytest.mark.parametrize("version, minor", [
    ("latest", None), ("v1.0", 0), ("v1.25", 25), ("v1.100", 100)])
def test_valid_versions(version, minor):
    assert ps.parse_version(version) == minor


@pytest.mark.parametrize("version", [
    "", "1.25", "v1.025", "v2.0", "v1.", "Latest", "v1.25\n", "v1.99999999999999999999"])
def test_invalid_versions(version):
    assert ps.parse_version(version) is False


def test_invalid_labels_and_upstreams_message():
    policy, found = ps.policy_from_labels(labels(enforce="strict", audit="x",
                                                 warn_version="v1"))
    assert str(policy.enforce) == "restricted:latest"  # fails closed
    assert str(policy.audit) == "privileged:latest"  # fails open
    error = ps.invalid("ns", found)
    assert error.code == 422 and error.message == (
        'Namespace "ns" is invalid: [metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted, '
        'metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: "x": must be one '
        'of privileged, baseline, restricted, '
        'metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "v1": must '
        'be "latest" or "v1.x"]')
    assert error.details["kind"] == "Namespace"
    assert error.details["causes"][2] == {
        "reason": "FieldValueInvalid", "message": 'Invalid value: "v1": must be "latest" or '
                                                  '"v1.x"',
        "field": "metadata.labels[pod-security.kubernetes.io/warn-version]"}
    single = ps.invalid("ns", found[:1])
    assert single.message == (
        'Namespace "ns" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted')


# --- pods, updates, namespaces' existing pods ----------------------------------------------

def test_only_image_changes_and_new_containers_are_significant():
    old = {"spec": spec(container("x"))}
    assert not ps.significant_update({"spec": spec(container("x", privileged=True))}, old)
    changed = {"spec": {"containers": [{**container("x"), "image": "other"}]}}
    assert ps.significant_update(changed, old)
    assert ps.significant_update({"spec": spec(container("x"), container("y"))}, old)
    debug = {"spec": {**spec(container("x")), "ephemeralContainers": [container("d")]}}
    assert ps.significant_update(debug, old)
    assert not ps.significant_update(debug, debug)


def test_replicas_of_one_controller_come_after_one_of_each():
    def pod(name, owner=None):
        refs = [{"uid": owner, "controller": True}] if owner else []
        return {"metadata": {"name": name, "ownerReferences": refs}}
    pods = [pod("a1", "a"), pod("a2", "a"), pod("b1", "b"), pod("lone"), pod("a3", "a")]
    assert [p["metadata"]["name"] for p in ps.prioritized(pods)] == [
        "a1", "b1", "lone", "a2", "a3"]


def test_pod_counts_in_namespace_warnings():
    assert ps.named("p", 1) == "p"
    assert ps.named("p", 2) == "p (and 1 other pod)"
    assert ps.named("p", 5) == "p (and 4 other pods)"
