"""Container environments: `$(VAR)` expansion, envFrom, valueFrom sources, service links and
upstream's CreateContainerConfigError messages (with an in-memory lookup)."""

from __future__ import annotations

import base64

import pytest

from k8py.agent.kubelet.env import (ContainerConfigError, env_map, expand, mapping_for,
                                    resolve_env, service_env)

NODE = {"status": {"allocatable": {"cpu": "4", "memory": "8Gi"},
                   "addresses": [{"type": "Hostname", "address": "n1"},
                                 {"type": "InternalIP", "address": "192.168.5.10"}]}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS = {
    ("ConfigMap", "default", "settings"): {"data": {"MODE": "fast", "LEVEL": "3",
                                                    "bad key": "x"}},
    ("Secret", "default", "creds"): {"data": {"PASSWORD": b64("s3cret"),
                                              "RAW": base64.b64encode(b"\xff\x00").decode()}},
}


async def lookup(kind, namespace, name):
    return OBJECTS.get((kind, namespace, name))


def pod_with(container: dict, **spec) -> dict:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u-1",
                         "labels": {"app": "a", "tier": "b"}, "annotations": {"x": "y"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "robot",
                     "containers": [container], **spec},
            "status": {"podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}]}}


async def resolve(container, services=(), **spec):
    pod = pod_with({"name": "c", "image": "i", **container}, **spec)
    return env_map(await resolve_env(pod, pod["spec"]["containers"][0], lookup, NODE,
                                     services=services))


def test_expand():
    mapping = mapping_for({"A": "x", "B": "y"})
    cases = {"$(A)": "x", "$$(A)": "$(A)", "a$(A)b$(C)": "axb$(C)", "$(A": "$(A", "$": "$",
             "x$y": "x$y", "$(A)$(B)": "xy", "$$$(A)": "$x", "": ""}
    for text, want in cases.items():
        assert expand(text, mapping) == want, text


async def test_values_expand_in_order():
    env = await resolve({"env": [{"name": "A", "value": "one"},
                                 {"name": "B", "value": "$(A)-two-$(C)"},
                                 {"name": "C", "value": "three"},
                                 {"name": "D", "value": "$$(A)"},
                                 {"name": "E"}]})
    assert env == {"A": "one", "B": "one-two-$(C)", "C": "three", "D": "$(A)", "E": ""}


async def test_env_from_with_prefix_then_env_overrides():
    env = await resolve({"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                                     {"secretRef": {"name": "creds"}}],
                         "env": [{"name": "CFG_MODE", "value": "slow-$(CFG_LEVEL)"}]})
    assert env == {"CFG_MODE": "slow-3", "CFG_LEVEL": "3", "PASSWORD": "s3cret",
                   "RAW": b"\xff\x00".decode("utf-8", "surrogateescape")}


async def test_binary_secret_values_keep_their_bytes():
    pod = pod_with({"name": "c", "image": "i",
                    "env": [{"name": "R", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                         "key": "RAW"}}}]})
    kvs = await resolve_env(pod, pod["spec"]["containers"][0], lookup, NODE)
    assert [(kv.key, kv.value) for kv in kvs] == [("R", b"\xff\x00")]


async def test_field_refs():
    fields = ["metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['tier']",
              "metadata.annotations['x']", "metadata.labels", "spec.nodeName",
              "spec.serviceAccountName", "status.podIP", "status.podIPs", "status.hostIP",
              "status.hostIPs"]
    env = await resolve({"env": [{"name": f"V{i}", "valueFrom": {"fieldRef": {"fieldPath": f}}}
                                 for i, f in enumerate(fields)]})
    assert list(env.values()) == ["p", "default", "u-1", "b", "y", 'app="a"\ntier="b"', "n1",
                                  "robot", "10.42.0.7", "10.42.0.7", "192.168.5.10",
                                  "192.168.5.10"]


async def test_resource_field_refs_default_limits_to_allocatable():
    def ref(resource, divisor=None):
        r = {"resource": resource}
        if divisor:
            r["divisor"] = divisor
        return {"valueFrom": {"resourceFieldRef": r}}
    env = await resolve({
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                      "limits": {"memory": "100Mi"}},
        "env": [{"name": "LC", **ref("limits.cpu")},
                {"name": "LCM", **ref("limits.cpu", "1m")},
                {"name": "RC", **ref("requests.cpu")},
                {"name": "RCM", **ref("requests.cpu", "1m")},
                {"name": "LM", **ref("limits.memory")},
                {"name": "LMI", **ref("limits.memory", "1Mi")},
                {"name": "RM", **ref("requests.memory", "1Mi")}]})
    assert env == {"LC": "4", "LCM": "4000", "RC": "1", "RCM": "250",
                   "LM": str(100 << 20), "LMI": "100", "RM": "64"}


async def test_missing_sources_fail_with_upstream_messages():
    with pytest.raises(ContainerConfigError, match='^configmap "nope" not found$'):
        await resolve({"envFrom": [{"configMapRef": {"name": "nope"}}]})
    with pytest.raises(ContainerConfigError, match='^secret "nope" not found$'):
        await resolve({"env": [{"name": "X", "valueFrom": {
            "secretKeyRef": {"name": "nope", "key": "k"}}}]})
    with pytest.raises(ContainerConfigError,
                       match="^couldn't find key y in ConfigMap default/settings$"):
        await resolve({"env": [{"name": "X", "valueFrom": {
            "configMapKeyRef": {"name": "settings", "key": "y"}}}]})
    with pytest.raises(ContainerConfigError,
                       match="^couldn't find key y in Secret default/creds$"):
        await resolve({"env": [{"name": "X", "valueFrom": {
            "secretKeyRef": {"name": "creds", "key": "y"}}}]})


async def test_optional_sources_are_skipped():
    env = await resolve({"envFrom": [{"configMapRef": {"name": "nope", "optional": True}}],
                         "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
                             "name": "settings", "key": "y", "optional": True}}},
                                 {"name": "Y", "valueFrom": {"secretKeyRef": {
                                     "name": "nope", "key": "k", "optional": True}}},
                                 {"name": "Z", "value": "z"}]})
    assert env == {"Z": "z"}


SERVICES = [
    {"metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443,
                                                   "protocol": "TCP"}]}},
    {"metadata": {"name": "my-db", "namespace": "default"},
     "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 5432}]}},
    {"metadata": {"name": "headless", "namespace": "default"},
     "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
    {"metadata": {"name": "elsewhere", "namespace": "other"},
     "spec": {"clusterIP": "10.43.0.30", "ports": [{"port": 80}]}},
]


def test_service_env():
    env = service_env(SERVICES, "default")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.43.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://10.43.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp"
    assert env["KUBERNETES_PORT_443_TCP_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.43.0.1"
    assert env["MY_DB_SERVICE_HOST"] == "10.43.0.20"
    assert not any(k.startswith(("HEADLESS", "ELSEWHERE")) for k in env)
    # Without service links only the kubernetes Service; other namespaces see it too.
    assert {k for k in service_env(SERVICES, "default", False) if "MY_DB" in k} == set()
    assert "KUBERNETES_SERVICE_HOST" in service_env(SERVICES, "other", False)


async def test_service_env_does_not_override_and_feeds_expansion():
    env = await resolve({"env": [{"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):x"},
                                 {"name": "MY_DB_SERVICE_HOST", "value": "mine"}]},
                        services=SERVICES)
    assert env["API"] == "10.43.0.1:x"
    assert env["MY_DB_SERVICE_HOST"] == "mine"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
