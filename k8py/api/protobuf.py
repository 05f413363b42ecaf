"""Kubernetes protobuf request bodies, decoded into the JSON form every other path uses.

kubectl 1.32's typed `create configmap|secret|namespace|deployment|job|cronjob|service` and
`auth can-i` send `application/vnd.kubernetes.protobuf`: the 4 bytes `k8s\\x00`, then a
`runtime.Unknown` whose `typeMeta` names the kind and whose `raw` holds the object's own
protobuf message. This module reads the protobuf wire format against a table of the
upstream messages those objects use (field numbers from upstream's `generated.proto`, v1.32),
and turns each message into its JSON shape, including upstream's special JSON forms: `Time`
as an RFC 3339 string, `Quantity` as a string, `IntOrString` as a number or string, `bytes`
as base64, and the inline members (`Probe.handler`, `Volume.volumeSource`).

A field the table does not know is an error naming it (`ProtobufError`, answered 400), never
silently dropped: losing part of an object would be worse than refusing it.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


# A field: (json name, type[, "repeated"]); type is a scalar name, a message name, or
# ("map", key type, value type). Message names are upstream's short names.
S, B, I32, I64, BOOL = "string", "bytes", "int32", "int64", "bool"
REP = "repeated"


def _map(value: str) -> tuple[str, str, str]:
    return ("map", S, value)


MESSAGES: dict[str, dict[int, tuple]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", B), 3: ("contentEncoding", S),
                4: ("contentType", S)},
    "TypeMeta": {1: ("apiVersion", S), 2: ("kind", S)},
    "ObjectMeta": {
        1: ("name", S), 2: ("generateName", S), 3: ("namespace", S), 4: ("selfLink", S),
        5: ("uid", S), 6: ("resourceVersion", S), 7: ("generation", I64),
        8: ("creationTimestamp", "Time"), 9: ("deletionTimestamp", "Time"),
        10: ("deletionGracePeriodSeconds", I64), 11: ("labels", _map(S)),
        12: ("annotations", _map(S)), 13: ("ownerReferences", "OwnerReference", REP),
        14: ("finalizers", S, REP),
    },
    "OwnerReference": {1: ("kind", S), 3: ("name", S), 4: ("uid", S), 5: ("apiVersion", S),
                       6: ("controller", BOOL), 7: ("blockOwnerDeletion", BOOL)},
    "LabelSelector": {1: ("matchLabels", _map(S)),
                      2: ("matchExpressions", "LabelSelectorRequirement", REP)},
    "LabelSelectorRequirement": {1: ("key", S), 2: ("operator", S), 3: ("values", S, REP)},
    # core/v1
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", _map(S)),
                  3: ("binaryData", _map(B)), 4: ("immutable", BOOL)},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", _map(B)), 3: ("type", S),
               4: ("stringData", _map(S)), 5: ("immutable", BOOL)},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"),
                  3: ("status", "NamespaceStatus")},
    "NamespaceSpec": {1: ("finalizers", S, REP)},
    "NamespaceStatus": {1: ("phase", S)},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"),
                3: ("status", "ServiceStatus")},
    "ServiceSpec": {
        1: ("ports", "ServicePort", REP), 2: ("selector", _map(S)), 3: ("clusterIP", S),
        4: ("type", S), 5: ("externalIPs", S, REP), 7: ("sessionAffinity", S),
        8: ("loadBalancerIP", S), 9: ("loadBalancerSourceRanges", S, REP),
        10: ("externalName", S), 11: ("externalTrafficPolicy", S),
        12: ("healthCheckNodePort", I32), 13: ("publishNotReadyAddresses", BOOL),
        17: ("ipFamilyPolicy", S), 18: ("clusterIPs", S, REP), 19: ("ipFamilies", S, REP),
        20: ("allocateLoadBalancerNodePorts", BOOL), 21: ("loadBalancerClass", S),
        22: ("internalTrafficPolicy", S), 23: ("trafficDistribution", S),
    },
    "ServicePort": {1: ("name", S), 2: ("protocol", S), 3: ("port", I32),
                    4: ("targetPort", "IntOrString"), 5: ("nodePort", I32),
                    6: ("appProtocol", S)},
    "ServiceStatus": {},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {
        1: ("volumes", "Volume", REP), 2: ("containers", "Container", REP),
        3: ("restartPolicy", S), 4: ("terminationGracePeriodSeconds", I64),
        5: ("activeDeadlineSeconds", I64), 6: ("dnsPolicy", S), 7: ("nodeSelector", _map(S)),
        8: ("serviceAccountName", S), 9: ("serviceAccount", S), 10: ("nodeName", S),
        11: ("hostNetwork", BOOL), 12: ("hostPID", BOOL), 13: ("hostIPC", BOOL),
        16: ("hostname", S), 17: ("subdomain", S), 19: ("schedulerName", S),
        20: ("initContainers", "Container", REP), 21: ("automountServiceAccountToken", BOOL),
        24: ("priorityClassName", S), 25: ("priority", I32),
        27: ("shareProcessNamespace", BOOL), 29: ("runtimeClassName", S),
        30: ("enableServiceLinks", BOOL), 31: ("preemptionPolicy", S),
        35: ("setHostnameAsFQDN", BOOL), 37: ("hostUsers", BOOL),
        40: ("resources", "ResourceRequirements"),
    },
    "Container": {
        1: ("name", S), 2: ("image", S), 3: ("command", S, REP), 4: ("args", S, REP),
        5: ("workingDir", S), 6: ("ports", "ContainerPort", REP), 7: ("env", "EnvVar", REP),
        8: ("resources", "ResourceRequirements"), 9: ("volumeMounts", "VolumeMount", REP),
        10: ("livenessProbe", "Probe"), 11: ("readinessProbe", "Probe"),
        13: ("terminationMessagePath", S), 14: ("imagePullPolicy", S), 16: ("stdin", BOOL),
        17: ("stdinOnce", BOOL), 18: ("tty", BOOL), 20: ("terminationMessagePolicy", S),
        22: ("startupProbe", "Probe"), 24: ("restartPolicy", S),
    },
    "ContainerPort": {1: ("name", S), 2: ("hostPort", I32), 3: ("containerPort", I32),
                      4: ("protocol", S), 5: ("hostIP", S)},
    "EnvVar": {1: ("name", S), 2: ("value", S)},
    "ResourceRequirements": {1: ("limits", _map("Quantity")), 2: ("requests", _map("Quantity")),
                             3: ("claims", "ResourceClaim", REP)},
    "ResourceClaim": {1: ("name", S), 2: ("request", S)},
    "VolumeMount": {1: ("name", S), 2: ("readOnly", BOOL), 3: ("mountPath", S),
                    4: ("subPath", S), 5: ("mountPropagation", S), 6: ("subPathExpr", S),
                    7: ("recursiveReadOnly", S)},
    "Volume": {1: ("name", S)},
    "Probe": {1: ("", "ProbeHandler"), 2: ("initialDelaySeconds", I32),
              3: ("timeoutSeconds", I32), 4: ("periodSeconds", I32),
              5: ("successThreshold", I32), 6: ("failureThreshold", I32),
              7: ("terminationGracePeriodSeconds", I64)},
    "ProbeHandler": {1: ("exec", "ExecAction"), 2: ("httpGet", "HTTPGetAction"),
                     3: ("tcpSocket", "TCPSocketAction")},
    "ExecAction": {1: ("command", S, REP)},
    "HTTPGetAction": {1: ("path", S), 2: ("port", "IntOrString"), 3: ("host", S),
                      4: ("scheme", S), 5: ("httpHeaders", "HTTPHeader", REP)},
    "HTTPHeader": {1: ("name", S), 2: ("value", S)},
    "TCPSocketAction": {1: ("port", "IntOrString"), 2: ("host", S)},
    # apps/v1
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec"),
                   3: ("status", "DeploymentStatus")},
    "DeploymentSpec": {1: ("replicas", I32), 2: ("selector", "LabelSelector"),
                       3: ("template", "PodTemplateSpec"), 4: ("strategy", "DeploymentStrategy"),
                       5: ("minReadySeconds", I32), 6: ("revisionHistoryLimit", I32),
                       7: ("paused", BOOL), 9: ("progressDeadlineSeconds", I32)},
    "DeploymentStrategy": {1: ("type", S), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "IntOrString"),
                                2: ("maxSurge", "IntOrString")},
    "DeploymentStatus": {1: ("observedGeneration", I64), 2: ("replicas", I32),
                         3: ("updatedReplicas", I32), 4: ("availableReplicas", I32),
                         5: ("unavailableReplicas", I32), 7: ("readyReplicas", I32),
                         8: ("collisionCount", I32)},
    # batch/v1
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec"), 3: ("status", "JobStatus")},
    "JobSpec": {1: ("parallelism", I32), 2: ("completions", I32),
                3: ("activeDeadlineSeconds", I64), 4: ("selector", "LabelSelector"),
                5: ("manualSelector", BOOL), 6: ("template", "PodTemplateSpec"),
                7: ("backoffLimit", I32), 8: ("ttlSecondsAfterFinished", I32),
                9: ("completionMode", S), 10: ("suspend", BOOL), 12: ("backoffLimitPerIndex", I32),
                13: ("maxFailedIndexes", I32), 14: ("podReplacementPolicy", S),
                15: ("managedBy", S)},
    "JobStatus": {2: ("startTime", "Time"), 3: ("completionTime", "Time"),
                  4: ("active", I32), 5: ("succeeded", I32), 6: ("failed", I32),
                  7: ("completedIndexes", S), 9: ("ready", I32), 10: ("failedIndexes", S),
                  11: ("terminating", I32)},
    "CronJob": {1: ("metadata", "ObjectMeta"), 2: ("spec", "CronJobSpec"),
                3: ("status", "CronJobStatus")},
    "CronJobSpec": {1: ("schedule", S), 2: ("startingDeadlineSeconds", I64),
                    3: ("concurrencyPolicy", S), 4: ("suspend", BOOL),
                    5: ("jobTemplate", "JobTemplateSpec"), 6: ("successfulJobsHistoryLimit", I32),
                    7: ("failedJobsHistoryLimit", I32), 8: ("timeZone", S)},
    "CronJobStatus": {4: ("lastScheduleTime", "Time"), 5: ("lastSuccessfulTime", "Time")},
    "JobTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    # authorization/v1
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"),
                                2: ("spec", "SelfSubjectAccessReviewSpec"),
                                3: ("status", "SubjectAccessReviewStatus")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", S), 2: ("verb", S), 3: ("group", S),
                           4: ("version", S), 5: ("resource", S), 6: ("subresource", S),
                           7: ("name", S)},
    "NonResourceAttributes": {1: ("path", S), 2: ("verb", S)},
    "SubjectAccessReviewStatus": {1: ("allowed", BOOL), 2: ("reason", S),
                                  3: ("evaluationError", S), 4: ("denied", BOOL)},
}

# (apiVersion, kind) of a request body -> its message
ROOTS = {
    ("v1", "ConfigMap"): "ConfigMap", ("v1", "Secret"): "Secret",
    ("v1", "Namespace"): "Namespace", ("v1", "Service"): "Service",
    ("apps/v1", "Deployment"): "Deployment", ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes):
    """(field number, wire type, value) for each field of one message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ProtobufError("truncated field")
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if i > len(data):
            raise ProtobufError("truncated field")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32 and not -(1 << 31) <= value < (1 << 31):
        raise ProtobufError("int32 out of range")
    return value


def _scalar(kind: str, wire: int, value: Any) -> Any:
    if kind in (S, B):
        if wire != 2:
            raise ProtobufError(f"{kind} with wire type {wire}")
        if kind == B:
            return base64.b64encode(value).decode()
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtobufError("a string is not valid UTF-8") from None
    if wire != 0:
        raise ProtobufError(f"{kind} with wire type {wire}")
    if kind == BOOL:
        return bool(value)
    return _signed(value, 32 if kind == I32 else 64)


def _special(name: str, data: bytes) -> Any:
    if name == "Time":
        seconds = nanos = 0
        for number, wire, value in _fields(data):
            if number == 1:
                seconds = _signed(value, 64)
            elif number == 2:
                nanos = value
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    if name == "Quantity":
        for number, wire, value in _fields(data):
            if number == 1:
                return _scalar(S, wire, value)
        return "0"
    if name == "IntOrString":
        kind, int_value, str_value = 0, 0, ""
        for number, wire, value in _fields(data):
            if number == 1:
                kind = value
            elif number == 2:
                int_value = _signed(value, 32)
            elif number == 3:
                str_value = _scalar(S, wire, value)
        return str_value if kind == 1 else int_value
    raise KeyError(name)


def _decode_value(kind: Any, wire: int, value: Any, where: str) -> Any:
    if isinstance(kind, str) and kind in (S, B, I32, I64, BOOL):
        return _scalar(kind, wire, value)
    if wire != 2:
        raise ProtobufError(f"{where}: a message with wire type {wire}")
    if kind in ("Time", "Quantity", "IntOrString"):
        return _special(kind, value)
    return decode_message(kind, value, where)


def decode_message(name: str, data: bytes, where: str = "") -> dict[str, Any]:
    table = MESSAGES.get(name)
    if table is None:
        raise ProtobufError(f"{where or name}: k8py does not decode protobuf {name} yet; "
                            "send JSON instead")
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        spec = table.get(number)
        if spec is None:
            raise ProtobufError(f"{where or name}: field {number} of {name} is not decoded by "
                                "k8py yet; send JSON instead")
        json_name, kind = spec[0], spec[1]
        path = f"{where}.{json_name}" if where else json_name
        if isinstance(kind, tuple):  # a map entry: key = 1, value = 2
            if wire != 2:
                raise ProtobufError(f"{path}: a map entry with wire type {wire}")
            key, item = "", None
            for n, w, v in _fields(value):
                if n == 1:
                    key = _scalar(kind[1], w, v)
                elif n == 2:
                    item = _decode_value(kind[2], w, v, f"{path}[{key}]")
            if item is None:
                item = "" if kind[2] in (S, B) else ({} if kind[2] not in ("Quantity",) else "0")
            out.setdefault(json_name, {})[key] = item
        elif len(spec) > 2 and spec[2] == REP:
            if wire == 2 and kind in (I32, I64, BOOL):  # packed
                i, items = 0, []
                while i < len(value):
                    v, i = _varint(value, i)
                    items.append(_scalar(kind, 0, v))
                out.setdefault(json_name, []).extend(items)
            else:
                out.setdefault(json_name, []).append(_decode_value(kind, wire, value, path))
        elif json_name == "":  # an inline member: its fields sit in this object
            out.update(_decode_value(kind, wire, value, where))
        else:
            decoded = _decode_value(kind, wire, value, path)
            # Go writes every non-pointer string, empty or not; its JSON (omitempty) leaves
            # empty ones out, and so does this.
            if decoded != "" or kind not in (S, B):
                out[json_name] = decoded
    return out


def decode_body(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf request body as the JSON object it stands for."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf prefix")
    unknown = decode_message("Unknown", body[len(MAGIC):])
    type_meta = unknown.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    root = ROOTS.get((api_version, kind))
    if root is None:
        raise ProtobufError(f"k8py does not decode protobuf {kind or 'objects'} "
                            f"({api_version or 'no apiVersion'}) yet; send JSON instead")
    raw = base64.b64decode(unknown.get("raw", ""))
    obj = decode_message(root, raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
