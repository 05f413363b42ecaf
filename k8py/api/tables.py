"""Server-side printing: `meta.k8s.io/v1` Tables, with upstream's columns for common kinds.

`kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints the cells
as they come, so the columns and cell texts here are what users see. They follow upstream's
printers (pkg/printers/internalversion/printers.go): column names in Title Case (kubectl
upper-cases them), `priority: 1` for the `-o wide` extras, ages as `duration.HumanDuration`
writes them. Kinds without a printer get NAME and AGE, as upstream prints custom resources
without printer columns; Roles and ClusterRoles, which have no printer upstream either, get
the API server's default table (NAME, CREATED AT) as upstream's do.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from k8py.api import conversion
from k8py.api.selectors import format_label_selector

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj, datetime.datetime], Any]]  # name, type, priority


def human_duration(seconds: float) -> str:
    """upstream's apimachinery duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _since(value: str | None, now: datetime.datetime) -> str:
    t = _parse_time(value)
    return "<unknown>" if t is None else human_duration((now - t).total_seconds())


def _age(obj: Obj, now) -> str:
    return _since(obj.get("metadata", {}).get("creationTimestamp"), now)


def _name(obj: Obj, now) -> str:
    return obj.get("metadata", {}).get("name", "")


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(part)
    return default if obj is None else obj


def _containers(obj: Obj, *template: str) -> list[Obj]:
    return _get(obj, *template, "containers", default=[]) or []


def _names(containers: list[Obj]) -> str:
    return ",".join(c.get("name", "") for c in containers)


def _images(containers: list[Obj]) -> str:
    return ",".join(c.get("image", "") for c in containers)


def _selector(obj: Obj, now=None) -> str:
    selector = _get(obj, "spec", "selector", default={})
    if not isinstance(selector, dict):
        return "<none>"
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}  # a replicationcontroller's plain map
    return format_label_selector(selector) or "<none>"


# --- pods -----------------------------------------------------------------------------------


def _pod_status(pod: Obj, now) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            reason = "Init:" + (terminated.get("reason") or
                                f"ExitCode:{terminated.get('exitCode')}")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(_get(pod, 'spec', 'initContainers', default=[]))}"
        break
    else:
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                t = state["terminated"]
                reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal")
                                             else f"ExitCode:{t.get('exitCode')}")
            elif state.get("running") and cs.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_ready(pod: Obj, now) -> str:
    statuses = _get(pod, "status", "containerStatuses", default=[])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{len(_containers(pod, 'spec'))}"


def _pod_restarts(pod: Obj, now) -> str:
    statuses = _get(pod, "status", "containerStatuses", default=[])
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    last = None
    for cs in statuses:
        finished = _parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
        if finished and (last is None or finished > last):
            last = finished
    if restarts and last is not None:
        return f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    return str(restarts)


def _pod_gates(pod: Obj, now) -> str:
    gates = _get(pod, "spec", "readinessGates", default=[])
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in
                  _get(pod, "status", "conditions", default=[])}
    ready = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
    return f"{ready}/{len(gates)}"


def _or_none(value: Any) -> Any:
    return "<none>" if value in (None, "") else value


# --- the printers ---------------------------------------------------------------------------

NAME: Column = ("Name", "string", 0, _name)
AGE: Column = ("Age", "string", 0, _age)


def _wide_workload(*template: str) -> list[Column]:
    return [
        ("Containers", "string", 1, lambda o, n: _names(_containers(o, *template))),
        ("Images", "string", 1, lambda o, n: _images(_containers(o, *template))),
        ("Selector", "string", 1, _selector),
    ]


def _service_ports(svc: Obj, now) -> str:
    ports = []
    for p in _get(svc, "spec", "ports", default=[]):
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _external_ips(svc: Obj, now) -> str:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    ingress = [i.get("ip") or i.get("hostname") for i in
               _get(svc, "status", "loadBalancer", "ingress", default=[])]
    if kind == "ExternalName":
        return spec.get("externalName", "<none>")
    if kind == "LoadBalancer":
        ips = ingress + list(spec.get("externalIPs") or [])
        return ",".join(ips) if ips else "<pending>"
    return ",".join(spec.get("externalIPs") or []) or "<none>"


def _node_status(node: Obj, now) -> str:
    ready = next((c for c in _get(node, "status", "conditions", default=[])
                  if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if ready is None:
        status = "Unknown"
    if _get(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _node_roles(node: Obj, now) -> str:
    labels = _get(node, "metadata", "labels", default={})
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def _node_address(kind: str):
    def cell(node: Obj, now) -> str:
        for address in _get(node, "status", "addresses", default=[]):
            if address.get("type") == kind:
                return address.get("address", "<none>")
        return "<none>"
    return cell


def _job_status(job: Obj, now) -> str:
    """upstream's precedence: Complete, Failed, Terminating, Suspended, FailureTarget."""
    true = set()
    for c in _get(job, "status", "conditions", default=[]):
        if c.get("type") not in true and c.get("status") == "True":
            true.add(c.get("type"))
    if "Complete" in true or "Failed" in true:
        return "Complete" if "Complete" in true else "Failed"
    if _get(job, "metadata", "deletionTimestamp"):
        return "Terminating"
    for kind in ("Suspended", "FailureTarget"):
        if kind in true:
            return kind
    return "Running"


def _job_completions(job: Obj, now) -> str:
    succeeded = _get(job, "status", "succeeded", default=0)
    completions = _get(job, "spec", "completions")
    if completions is not None:
        return f"{succeeded}/{completions}"
    parallelism = _get(job, "spec", "parallelism", default=0)
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _job_duration(job: Obj, now) -> str:
    start = _parse_time(_get(job, "status", "startTime"))
    if start is None:
        return ""
    end = _parse_time(_get(job, "status", "completionTime")) or now
    return human_duration((end - start).total_seconds())


def _count(*path: str):
    return lambda o, n: _get(o, *path, default=0)


def _with_more(items: list[str], count: int, maximum: int = 3, empty: str = "<unset>") -> str:
    """upstream's listWithMoreString: the first three, then "+ N more..."."""
    text = ",".join(items[:maximum])
    if count > maximum:
        return f"{text} + {count - maximum} more..."
    return text or empty


def _host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"  # Go's net.JoinHostPort


def _endpoints(obj: Obj, now) -> str:
    """upstream's formatEndpoints: ip:port per address and port, three at most."""
    subsets = obj.get("subsets") or []
    if not subsets:
        return "<none>"
    items, count = [], 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:  # a headless service without ports
            items += addresses
            count += len(addresses)
            continue
        for port in ports:
            items += [_host_port(ip, port.get("port", 0)) for ip in addresses]
            count += len(addresses)
    return _with_more(items, count, empty="")


def _slice_port(port: Obj) -> str:
    if port.get("port") is not None:
        return str(port["port"])
    return port["name"] if port.get("name") is not None else "*"


def _slice_ports(obj: Obj, now) -> str:
    ports = obj.get("ports") or []
    return _with_more([_slice_port(p) for p in ports], len(ports))


def _slice_endpoints(obj: Obj, now) -> str:
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return _with_more(addresses, len(addresses))


def _int_or_na(*path: str):
    def cell(obj: Obj, now) -> str:
        value = _get(obj, *path)
        return "N/A" if value is None else str(value)
    return cell


def _bool_text(value: Any) -> str:
    """upstream's printBoolPtr."""
    return "<unset>" if value is None else ("True" if value else "False")


def _controller_name(obj: Obj, now) -> str:
    """The controlling owner as `kind.group/name` (a ControllerRevision's Controller)."""
    for ref in _get(obj, "metadata", "ownerReferences", default=[]):
        if ref.get("controller"):
            api_version = ref.get("apiVersion", "")
            group = api_version.split("/", 1)[0] if "/" in api_version else ""
            kind = ref.get("kind", "")
            group_kind = f"{kind}.{group}" if group else kind
            return f"{group_kind.lower()}/{ref.get('name', '')}" if group_kind else \
                ref.get("name", "")
    return "<none>"


def _subjects(kind: str):
    """A binding's subjects of one kind, as upstream's SubjectsStrings joins them."""
    def cell(obj: Obj, now) -> str:
        names = []
        for subject in obj.get("subjects") or []:
            if subject.get("kind") != kind:
                continue
            if kind == "ServiceAccount":
                names.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
            else:
                names.append(subject.get("name", ""))
        return ", ".join(names)
    return cell


def _quota(limits: bool):
    """A ResourceQuota's `name: used/hard` per resource in status.hard, requests or limits."""
    def cell(obj: Obj, now) -> str:
        hard = _get(obj, "status", "hard", default={})
        used = _get(obj, "status", "used", default={})
        parts = [f"{name}: {used.get(name, '0')}/{hard[name]}" for name in sorted(hard)
                 if (name.split(".")[0] == "limits" and "." in name) == limits]
        return ", ".join(parts)
    return cell


def _ingress_hosts(obj: Obj, now) -> str:
    """upstream's formatHosts: a rule without a host adds nothing; no hosts at all is "*"."""
    rules = _get(obj, "spec", "rules", default=[])
    hosts, more = [], False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - 3} more..." if more else "")


def _load_balancer(obj: Obj, now) -> str:
    ingress = _get(obj, "status", "loadBalancer", "ingress", default=[])
    seen = dict.fromkeys(i.get("ip") or i.get("hostname") for i in ingress)
    return ",".join(a for a in seen if a)


def _created_at(obj: Obj, now) -> str:
    return _get(obj, "metadata", "creationTimestamp", default="")


def _csr_duration(obj: Obj, now) -> str:
    seconds = _get(obj, "spec", "expirationSeconds")
    if not seconds:
        return "<none>"
    return human_duration(float(seconds))


def _csr_condition(obj: Obj, now) -> str:
    """As upstream's printer: the conditions' types joined ("Approved,Issued"), or
    "Pending"."""
    kinds = [c.get("type", "") for c in _get(obj, "status", "conditions", default=[]) or []
             if c.get("status", "True") == "True"]
    if _get(obj, "status", "certificate"):
        kinds.append("Issued")
    return ",".join(kinds) or "Pending"


def _as_hpa_v2(obj: Obj) -> Obj:
    """Upstream prints HPAs from the internal (v2-shaped) object, whichever version was
    asked for."""
    return conversion.convert(obj, "autoscaling/v2")


def _hpa_metric(spec: Obj, status: Obj | None) -> str:
    kind = spec.get("type")
    field = kind[:1].lower() + kind[1:] if isinstance(kind, str) and kind else ""
    source = spec.get(field) or {}
    target = source.get("target") or {}
    current = (status or {}).get(field)
    current_value = (current or {}).get("current") or {}
    unknown = "<unknown>"
    if kind in ("External", "Object"):
        if target.get("averageValue") is not None:
            shown = current_value.get("averageValue", unknown) if current else unknown
            return f"{shown}/{target['averageValue']} (avg)"
        shown = current_value.get("value", unknown) if current else unknown
        return f"{shown}/{target.get('value', '0')}"
    if kind == "Pods":
        shown = current_value.get("averageValue", unknown) if current else unknown
        return f"{shown}/{target.get('averageValue', '0')}"
    if kind in ("Resource", "ContainerResource"):
        name = source.get("name", "")
        if target.get("averageValue") is not None:
            shown = current_value.get("averageValue", "0") if current else unknown
            return f"{name}: {shown}/{target['averageValue']}"
        utilization = current_value.get("averageUtilization")
        shown = f"{utilization}%" if current and utilization is not None else unknown
        wanted = target.get("averageUtilization")
        return f"{name}: {shown}/{wanted}%" if wanted is not None else f"{name}: {shown}/<auto>"
    return "<unknown type>"


def _hpa_targets(obj: Obj, now) -> str:
    """formatHPAMetrics: each metric as current/target, at most two, then "+ N more..."."""
    hpa = _as_hpa_v2(obj)
    specs = _get(hpa, "spec", "metrics", default=None) or []
    if not specs:
        return "<none>"
    statuses = _get(hpa, "status", "currentMetrics", default=None) or []
    shown = [_hpa_metric(spec, statuses[i] if i < len(statuses) else None)
             for i, spec in enumerate(specs)]
    text = ", ".join(shown[:2])
    return f"{text} + {len(shown) - 2} more..." if len(shown) > 2 else text


def _hpa_reference(obj: Obj, now) -> str:
    ref = _get(obj, "spec", "scaleTargetRef", default={})
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _hpa_min_pods(obj: Obj, now) -> str:
    minimum = _get(obj, "spec", "minReplicas")
    return "<unset>" if minimum is None else str(minimum)


def _apiservice_service(obj: Obj, now) -> str:
    service = _get(obj, "spec", "service")
    return f"{service.get('namespace', '')}/{service.get('name', '')}" if service else "Local"


def _apiservice_available(obj: Obj, now) -> str:
    for condition in _get(obj, "status", "conditions", default=[]) or []:
        if condition.get("type") == "Available":
            if condition.get("status") == "True":
                return "True"
            return f"{condition.get('status')} ({condition.get('reason', '')})"
    return "Unknown"


PRINTERS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, _pod_restarts),
        AGE,
        ("IP", "string", 1, lambda o, n: _or_none(_get(o, "status", "podIP"))),
        ("Node", "string", 1, lambda o, n: _or_none(_get(o, "spec", "nodeName"))),
        ("Nominated Node", "string", 1,
         lambda o, n: _or_none(_get(o, "status", "nominatedNodeName"))),
        ("Readiness Gates", "string", 1, _pod_gates),
    ],
    ("apps", "deployments"): [
        NAME,
        ("Ready", "string", 0, lambda o, n: f"{_get(o, 'status', 'readyReplicas', default=0)}/"
                                            f"{_get(o, 'spec', 'replicas', default=1)}"),
        ("Up-to-date", "integer", 0, _count("status", "updatedReplicas")),
        ("Available", "integer", 0, _count("status", "availableReplicas")),
        AGE,
        *_wide_workload("spec", "template", "spec"),
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", 0, lambda o, n: _get(o, "spec", "replicas", default=1)),
        ("Current", "integer", 0, _count("status", "replicas")),
        ("Ready", "integer", 0, _count("status", "readyReplicas")),
        AGE,
        *_wide_workload("spec", "template", "spec"),
    ],
    ("apps", "statefulsets"): [
        NAME,
        ("Ready", "string", 0, lambda o, n: f"{_get(o, 'status', 'readyReplicas', default=0)}/"
                                            f"{_get(o, 'spec', 'replicas', default=1)}"),
        AGE,
        *_wide_workload("spec", "template", "spec")[:2],
    ],
    ("apps", "daemonsets"): [
        NAME,
        ("Desired", "integer", 0, _count("status", "desiredNumberScheduled")),
        ("Current", "integer", 0, _count("status", "currentNumberScheduled")),
        ("Ready", "integer", 0, _count("status", "numberReady")),
        ("Up-to-date", "integer", 0, _count("status", "updatedNumberScheduled")),
        ("Available", "integer", 0, _count("status", "numberAvailable")),
        ("Node Selector", "string", 0, lambda o, n: ",".join(
            f"{k}={v}" for k, v in sorted(
                _get(o, "spec", "template", "spec", "nodeSelector", default={}).items()))
         or "<none>"),
        AGE,
        *_wide_workload("spec", "template", "spec"),
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", 0, lambda o, n: _get(o, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o, n: _or_none(_get(o, "spec", "clusterIP"))),
        ("External-IP", "string", 0, _external_ips),
        ("Port(s)", "string", 0, _service_ports),
        AGE,
        ("Selector", "string", 1, lambda o, n: ",".join(
            f"{k}={v}" for k, v in sorted(_get(o, "spec", "selector", default={}).items()))
         or "<none>"),
    ],
    ("", "namespaces"): [
        NAME,
        ("Status", "string", 0, lambda o, n: _get(o, "status", "phase", default="")),
        AGE,
    ],
    ("", "nodes"): [
        NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        AGE,
        ("Version", "string", 0, lambda o, n: _get(o, "status", "nodeInfo", "kubeletVersion",
                                                   default="")),
        ("Internal-IP", "string", 1, _node_address("InternalIP")),
        ("External-IP", "string", 1, _node_address("ExternalIP")),
        ("OS-Image", "string", 1, lambda o, n: _get(o, "status", "nodeInfo", "osImage",
                                                    default="<unknown>")),
        ("Kernel-Version", "string", 1, lambda o, n: _get(o, "status", "nodeInfo",
                                                          "kernelVersion", default="<unknown>")),
        ("Container-Runtime", "string", 1, lambda o, n: _get(
            o, "status", "nodeInfo", "containerRuntimeVersion", default="<unknown>")),
    ],
    ("", "configmaps"): [
        NAME,
        ("Data", "integer", 0, lambda o, n: len(o.get("data") or {}) +
         len(o.get("binaryData") or {})),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        ("Type", "string", 0, lambda o, n: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o, n: len(o.get("data") or {})),
        AGE,
    ],
    ("", "serviceaccounts"): [
        NAME,
        ("Secrets", "integer", 0, lambda o, n: len(o.get("secrets") or [])),
        AGE,
    ],
    ("", "endpoints"): [NAME, ("Endpoints", "string", 0, _endpoints), AGE],
    ("batch", "jobs"): [
        NAME,
        ("Status", "string", 0, _job_status),
        ("Completions", "string", 0, _job_completions),
        ("Duration", "string", 0, _job_duration),
        AGE,
        *_wide_workload("spec", "template", "spec"),
    ],
    ("batch", "cronjobs"): [
        NAME,
        ("Schedule", "string", 0, lambda o, n: _get(o, "spec", "schedule", default="")),
        ("Timezone", "string", 0, lambda o, n: _get(o, "spec", "timeZone", default="<none>")),
        ("Suspend", "boolean", 0, lambda o, n: _bool_text(_get(o, "spec", "suspend"))),
        ("Active", "integer", 0, lambda o, n: len(_get(o, "status", "active", default=[]))),
        ("Last Schedule", "string", 0, lambda o, n: _since(
            _get(o, "status", "lastScheduleTime"), n) if _get(o, "status", "lastScheduleTime")
         else "<none>"),
        AGE,
        *_wide_workload("spec", "jobTemplate", "spec", "template", "spec")[:2],
        ("Selector", "string", 1, lambda o, n: format_label_selector(
            _get(o, "spec", "jobTemplate", "spec", "selector")) or "<none>"),
    ],
    ("discovery.k8s.io", "endpointslices"): [
        NAME,
        ("AddressType", "string", 0, lambda o, n: o.get("addressType", "")),
        ("Ports", "string", 0, _slice_ports),
        ("Endpoints", "string", 0, _slice_endpoints),
        AGE,
    ],
    ("policy", "poddisruptionbudgets"): [
        NAME,
        ("Min Available", "string", 0, _int_or_na("spec", "minAvailable")),
        ("Max Unavailable", "string", 0, _int_or_na("spec", "maxUnavailable")),
        ("Allowed Disruptions", "integer", 0, _count("status", "disruptionsAllowed")),
        AGE,
    ],
    ("apps", "controllerrevisions"): [
        NAME,
        ("Controller", "string", 0, _controller_name),
        ("Revision", "string", 0, lambda o, n: o.get("revision", 0)),
        AGE,
    ],
    ("networking.k8s.io", "ingresses"): [
        NAME,
        ("Class", "string", 0, lambda o, n: _get(o, "spec", "ingressClassName",
                                                 default="<none>")),
        ("Hosts", "string", 0, _ingress_hosts),
        ("Address", "string", 0, _load_balancer),
        ("Ports", "string", 0, lambda o, n: "80, 443" if _get(o, "spec", "tls") else "80"),
        AGE,
    ],
    ("", "resourcequotas"): [
        NAME,
        AGE,
        ("Request", "string", 0, _quota(limits=False)),
        ("Limit", "string", 0, _quota(limits=True)),
    ],
    ("scheduling.k8s.io", "priorityclasses"): [
        NAME,
        ("Value", "integer", 0, lambda o, n: o.get("value", 0)),
        ("Global-Default", "boolean", 0, lambda o, n: bool(o.get("globalDefault", False))),
        AGE,
        ("PreemptionPolicy", "string", 0, lambda o, n: o.get("preemptionPolicy", "")),
    ],
    **{("rbac.authorization.k8s.io", plural): [
        NAME,
        ("Role", "string", 0, lambda o, n: f"{_get(o, 'roleRef', 'kind', default='')}/"
                                           f"{_get(o, 'roleRef', 'name', default='')}"),
        AGE,
        ("Users", "string", 1, _subjects("User")),
        ("Groups", "string", 1, _subjects("Group")),
        ("ServiceAccounts", "string", 1, _subjects("ServiceAccount")),
    ] for plural in ("rolebindings", "clusterrolebindings")},
    # no printer upstream: the API server's default table, NAME and CREATED AT
    **{("rbac.authorization.k8s.io", plural): [NAME, ("Created At", "date", 0, _created_at)]
       for plural in ("roles", "clusterroles")},
    ("certificates.k8s.io", "certificatesigningrequests"): [
        NAME,
        AGE,
        ("SignerName", "string", 0, lambda o, n: _get(o, "spec", "signerName", default="")),
        ("Requestor", "string", 0, lambda o, n: _get(o, "spec", "username", default="")),
        ("RequestedDuration", "string", 0, _csr_duration),
        ("Condition", "string", 0, _csr_condition),
    ],
    ("apiregistration.k8s.io", "apiservices"): [
        NAME,
        ("Service", "string", 0, _apiservice_service),
        ("Available", "string", 0, _apiservice_available),
        AGE,
    ],
    ("autoscaling", "horizontalpodautoscalers"): [
        NAME,
        ("Reference", "string", 0, _hpa_reference),
        ("Targets", "string", 0, _hpa_targets),
        ("MinPods", "string", 0, _hpa_min_pods),
        ("MaxPods", "integer", 0, lambda o, n: _get(o, "spec", "maxReplicas", default=0)),
        ("Replicas", "integer", 0, _count("status", "currentReplicas")),
        AGE,
    ],
    ("coordination.k8s.io", "leases"): [
        NAME,
        ("Holder", "string", 0, lambda o, n: _get(o, "spec", "holderIdentity", default="")),
        AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", 0, lambda o, n: _since(
            o.get("lastTimestamp") or o.get("eventTime") or
            _get(o, "metadata", "creationTimestamp"), n)),
        ("Type", "string", 0, lambda o, n: o.get("type", "")),
        ("Reason", "string", 0, lambda o, n: o.get("reason", "")),
        ("Object", "string", 0, lambda o, n: f"{_get(o, 'involvedObject', 'kind', default='')}"
                                             f"/{_get(o, 'involvedObject', 'name', default='')}"
                                             .lower()),
        ("Message", "string", 0, lambda o, n: (o.get("message") or "").strip()),
    ],
}
# A ReplicationController prints as a ReplicaSet does (its selector is a plain map:
# `_selector` reads both).
PRINTERS[("", "replicationcontrollers")] = PRINTERS[("apps", "replicasets")]


def columns_for(group: str, plural: str) -> list[Column]:
    return PRINTERS.get((group, plural), [NAME, AGE])


def _column_definition(column: Column) -> dict[str, Any]:
    name, kind, priority, _ = column
    return {"name": name, "type": kind, "format": "name" if name == "Name" else "",
            "description": "", "priority": priority}


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def table(group: str, plural: str, objects: list[Obj], *, include_object: str = "Metadata",
          list_metadata: Obj | None = None, with_columns: bool = True) -> Obj:
    now = datetime.datetime.now(datetime.timezone.utc)
    columns = columns_for(group, plural)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [cell(obj, now) for _, _, _, cell in columns]}
        partial = _row_object(obj, include_object)
        if partial is not None:
            row["object"] = partial
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata or {},
        "columnDefinitions": [_column_definition(c) for c in columns] if with_columns else [],
        "rows": rows,
    }
