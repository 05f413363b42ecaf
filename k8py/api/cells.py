"""The cells of `kubectl get` tables: how each column's value is computed from an object, as
upstream's printers compute it (pkg/printers/internalversion/printers.go), and the shared
pieces (ages as `duration.HumanDuration` writes them, `NAME` and `AGE` columns). Which
columns each kind has is in `printers`.
"""



from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from k8py.api import conversion, resourcelists
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


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def since(value: str | None, now: datetime.datetime) -> str:
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration((now - t).total_seconds())


def age(obj: Obj, now) -> str:
    return since(obj.get("metadata", {}).get("creationTimestamp"), now)


def name(obj: Obj, now) -> str:
    return obj.get("metadata", {}).get("name", "")


def get(obj: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(part)
    return default if obj is None else obj


def containers(obj: Obj, *template: str) -> list[Obj]:
    return get(obj, *template, "containers", default=[]) or []


def names(containers: list[Obj]) -> str:
    return ",".join(c.get("name", "") for c in containers)


def images(containers: list[Obj]) -> str:
    return ",".join(c.get("image", "") for c in containers)


def selector(obj: Obj, now=None) -> str:
    selector = get(obj, "spec", "selector", default={})
    if not isinstance(selector, dict):
        return "<none>"
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}  # a replicationcontroller's plain map
    return format_label_selector(selector) or "<none>"


def pod_selector(obj: Obj, now=None) -> str:
    """A NetworkPolicy's spec.podSelector (upstream's FormatLabelSelector: empty: <none>)."""
    selector = get(obj, "spec", "podSelector", default={})
    return (format_label_selector(selector) if isinstance(selector, dict) else "") or "<none>"


# --- pods -----------------------------------------------------------------------------------


def pod_status(pod: Obj, now) -> str:
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
            reason = f"Init:{i}/{len(get(pod, 'spec', 'initContainers', default=[]))}"
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


def pod_ready(pod: Obj, now) -> str:
    statuses = get(pod, "status", "containerStatuses", default=[])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{len(containers(pod, 'spec'))}"


def pod_restarts(pod: Obj, now) -> str:
    statuses = get(pod, "status", "containerStatuses", default=[])
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    last = None
    for cs in statuses:
        finished = parse_time(get(cs, "lastState", "terminated", "finishedAt"))
        if finished and (last is None or finished > last):
            last = finished
    if restarts and last is not None:
        return f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    return str(restarts)


def pod_gates(pod: Obj, now) -> str:
    gates = get(pod, "spec", "readinessGates", default=[])
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in
                  get(pod, "status", "conditions", default=[])}
    ready = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
    return f"{ready}/{len(gates)}"


def or_none(value: Any) -> Any:
    return "<none>" if value in (None, "") else value


# --- the printers ---------------------------------------------------------------------------

NAME: Column = ("Name", "string", 0, name)
AGE: Column = ("Age", "string", 0, age)


def wide_workload(*template: str) -> list[Column]:
    return [
        ("Containers", "string", 1, lambda o, n: names(containers(o, *template))),
        ("Images", "string", 1, lambda o, n: images(containers(o, *template))),
        ("Selector", "string", 1, selector),
    ]


def service_ports(svc: Obj, now) -> str:
    ports = []
    for p in get(svc, "spec", "ports", default=[]):
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def external_ips(svc: Obj, now) -> str:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    ingress = [i.get("ip") or i.get("hostname") for i in
               get(svc, "status", "loadBalancer", "ingress", default=[])]
    if kind == "ExternalName":
        return spec.get("externalName", "<none>")
    if kind == "LoadBalancer":
        ips = ingress + list(spec.get("externalIPs") or [])
        return ",".join(ips) if ips else "<pending>"
    return ",".join(spec.get("externalIPs") or []) or "<none>"


def node_status(node: Obj, now) -> str:
    ready = next((c for c in get(node, "status", "conditions", default=[])
                  if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if ready is None:
        status = "Unknown"
    if get(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def node_roles(node: Obj, now) -> str:
    labels = get(node, "metadata", "labels", default={})
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def node_address(kind: str):
    def cell(node: Obj, now) -> str:
        for address in get(node, "status", "addresses", default=[]):
            if address.get("type") == kind:
                return address.get("address", "<none>")
        return "<none>"
    return cell


def job_status(job: Obj, now) -> str:
    """upstream's precedence: Complete, Failed, Terminating, Suspended, FailureTarget."""
    true = set()
    for c in get(job, "status", "conditions", default=[]):
        if c.get("type") not in true and c.get("status") == "True":
            true.add(c.get("type"))
    if "Complete" in true or "Failed" in true:
        return "Complete" if "Complete" in true else "Failed"
    if get(job, "metadata", "deletionTimestamp"):
        return "Terminating"
    for kind in ("Suspended", "FailureTarget"):
        if kind in true:
            return kind
    return "Running"


def job_completions(job: Obj, now) -> str:
    succeeded = get(job, "status", "succeeded", default=0)
    completions = get(job, "spec", "completions")
    if completions is not None:
        return f"{succeeded}/{completions}"
    parallelism = get(job, "spec", "parallelism", default=0)
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def job_duration(job: Obj, now) -> str:
    start = parse_time(get(job, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(get(job, "status", "completionTime")) or now
    return human_duration((end - start).total_seconds())


def count(*path: str):
    return lambda o, n: get(o, *path, default=0)


def ready_of_desired(obj: Obj, now) -> str:
    """READY of a Deployment or StatefulSet: ready replicas/desired ones."""
    return f"{get(obj, 'status', 'readyReplicas', default=0)}/" \
        f"{get(obj, 'spec', 'replicas', default=1)}"


def key_values(*path: str):
    """The map at `path` as `k=v,k=v` (sorted by key), or <none> (a node selector, a
    Service's selector)."""
    return lambda o, n: ",".join(
        f"{k}={v}" for k, v in sorted(get(o, *path, default={}).items())) or "<none>"


def with_more(items: list[str], count: int, maximum: int = 3, empty: str = "<unset>") -> str:
    """upstream's listWithMoreString: the first three, then "+ N more..."."""
    text = ",".join(items[:maximum])
    if count > maximum:
        return f"{text} + {count - maximum} more..."
    return text or empty


def host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"  # Go's net.JoinHostPort


def endpoints(obj: Obj, now) -> str:
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
            items += [host_port(ip, port.get("port", 0)) for ip in addresses]
            count += len(addresses)
    return with_more(items, count, empty="")


def slice_port(port: Obj) -> str:
    if port.get("port") is not None:
        return str(port["port"])
    return port["name"] if port.get("name") is not None else "*"


def slice_ports(obj: Obj, now) -> str:
    ports = obj.get("ports") or []
    return with_more([slice_port(p) for p in ports], len(ports))


def slice_endpoints(obj: Obj, now) -> str:
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return with_more(addresses, len(addresses))


def int_or_na(*path: str):
    def cell(obj: Obj, now) -> str:
        value = get(obj, *path)
        return "N/A" if value is None else str(value)
    return cell


def bool_text(value: Any) -> str:
    """upstream's printBoolPtr."""
    return "<unset>" if value is None else ("True" if value else "False")


def controller_name(obj: Obj, now) -> str:
    """The controlling owner as `kind.group/name` (a ControllerRevision's Controller)."""
    for ref in get(obj, "metadata", "ownerReferences", default=[]):
        if ref.get("controller"):
            api_version = ref.get("apiVersion", "")
            group = api_version.split("/", 1)[0] if "/" in api_version else ""
            kind = ref.get("kind", "")
            group_kind = f"{kind}.{group}" if group else kind
            return f"{group_kind.lower()}/{ref.get('name', '')}" if group_kind else \
                ref.get("name", "")
    return "<none>"


def subjects(kind: str):
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


def quota(limits: bool):
    """A ResourceQuota's `name: used/hard` per resource in status.hard, requests or limits,
    quantities in their canonical form (a missing used value is 0)."""
    def cell(obj: Obj, now) -> str:
        hard = resourcelists.read(get(obj, "status", "hard", default={}))
        used = resourcelists.read(get(obj, "status", "used", default={}))
        parts = [f"{name}: {used.get(name, resourcelists.ZERO)}/{hard[name]}"
                 for name in sorted(hard)
                 if (name.split(".")[0] == "limits" and "." in name) == limits]
        return ", ".join(parts)
    return cell


def ingress_hosts(obj: Obj, now) -> str:
    """upstream's formatHosts: a rule without a host adds nothing; no hosts at all is "*"."""
    rules = get(obj, "spec", "rules", default=[])
    hosts, more = [], False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - 3} more..." if more else "")


def load_balancer(obj: Obj, now) -> str:
    ingress = get(obj, "status", "loadBalancer", "ingress", default=[])
    seen = dict.fromkeys(i.get("ip") or i.get("hostname") for i in ingress)
    return ",".join(a for a in seen if a)


def created_at(obj: Obj, now) -> str:
    return get(obj, "metadata", "creationTimestamp", default="")


def csr_duration(obj: Obj, now) -> str:
    seconds = get(obj, "spec", "expirationSeconds")
    if not seconds:
        return "<none>"
    return human_duration(float(seconds))


def csr_condition(obj: Obj, now) -> str:
    """As upstream's printer: the conditions' types joined ("Approved,Issued"), or
    "Pending"."""
    kinds = [c.get("type", "") for c in get(obj, "status", "conditions", default=[]) or []
             if c.get("status", "True") == "True"]
    if get(obj, "status", "certificate"):
        kinds.append("Issued")
    return ",".join(kinds) or "Pending"


def as_hpa_v2(obj: Obj) -> Obj:
    """Upstream prints HPAs from the internal (v2-shaped) object, whichever version was
    asked for."""
    return conversion.convert(obj, "autoscaling/v2")


def hpa_metric(spec: Obj, status: Obj | None) -> str:
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


def hpa_targets(obj: Obj, now) -> str:
    """formatHPAMetrics: each metric as current/target, at most two, then "+ N more..."."""
    hpa = as_hpa_v2(obj)
    specs = get(hpa, "spec", "metrics", default=None) or []
    if not specs:
        return "<none>"
    statuses = get(hpa, "status", "currentMetrics", default=None) or []
    shown = [hpa_metric(spec, statuses[i] if i < len(statuses) else None)
             for i, spec in enumerate(specs)]
    text = ", ".join(shown[:2])
    return f"{text} + {len(shown) - 2} more..." if len(shown) > 2 else text


def hpa_reference(obj: Obj, now) -> str:
    ref = get(obj, "spec", "scaleTargetRef", default={})
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def hpa_min_pods(obj: Obj, now) -> str:
    minimum = get(obj, "spec", "minReplicas")
    return "<unset>" if minimum is None else str(minimum)


def apiservice_service(obj: Obj, now) -> str:
    service = get(obj, "spec", "service")
    return f"{service.get('namespace', '')}/{service.get('name', '')}" if service else "Local"


def apiservice_available(obj: Obj, now) -> str:
    for condition in get(obj, "status", "conditions", default=[]) or []:
        if condition.get("type") == "Available":
            if condition.get("status") == "True":
                return "True"
            return f"{condition.get('status')} ({condition.get('reason', '')})"
    return "Unknown"
