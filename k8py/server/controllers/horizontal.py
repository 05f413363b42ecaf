"""HorizontalPodAutoscalers (autoscaling/v2): upstream's horizontal-pod-autoscaler controller
(pkg/controller/podautoscaler/horizontal.go) on Resource and ContainerResource metrics.

Every HPA is looked at when it appears or its spec changes and then every sync period
(`--horizontal-pod-autoscaler-sync-period`, 15 s). One look:
1. reads the target's `scale` subresource (scaleTargetRef's group and kind → a built-in
   resource with a scale subresource; any version of the group, as upstream's RESTMapper):
   failing, AbleToScale=False FailedGetScale and an Event; else AbleToScale=True
   SucceededGetScale;
2. a target scaled to 0 with minReplicas > 0 is left alone (ScalingActive=False
   ScalingDisabled); replicas outside [minReplicas, maxReplicas] are brought inside;
3. otherwise each metric proposes a count (`replicacalculator`) over the pods the scale's
   selector matches; the largest wins. A metric that fails sets ScalingActive=False with its
   reason (FailedGetResourceMetric, ...) and an Event; when all fail, or some fail and the
   rest would scale down, nothing is scaled and FailedComputeMetricsReplicas is recorded.
   An unserved metrics API (404) is such a failure, as upstream's unavailable metrics API;
4. `hpascaling` stabilizes and rate-limits the proposal (AbleToScale and ScalingLimited);
5. a different count is written through the scale subresource (SuccessfulRescale "New size:
   N; reason: ..." or FailedRescale), lastScaleTime set;
6. the status (currentReplicas, desiredReplicas, currentMetrics, conditions) is written when
   it changed; a condition's lastTransitionTime moves only when its status does.

Pods, Object and External metrics need the custom and external metrics APIs, which k8py does
not serve: they fail as upstream's do when those APIs are not registered.
"""

from __future__ import annotations

import copy
import logging
from fractions import Fraction
from typing import Any

from k8py.api import errors, selectors, timestamps
from k8py.api.quantity import Quantity
from k8py.api.resources import BUILTIN, Resource, builtin
from k8py.client.client import Ref
from k8py.server.controllers.base import Controller
from k8py.server.controllers.hpascaling import ScalingHistory
from k8py.server.controllers.replicacalculator import (MetricsError, ReplicaCalculator,
                                                       ResourceMetricsAPI)

log = logging.getLogger(__name__)

HPAS = builtin("autoscaling/v2", "horizontalpodautoscalers")
PODS = builtin("v1", "pods")
SCALABLE = {(r.group, r.kind): r for r in BUILTIN if "scale" in r.subresources}


class ComputeError(Exception):
    """A metric's failure: str() is the error; `reason` and `cause` (the metric's own error)
    are what ScalingActive says."""

    def __init__(self, message: str, reason: str, cause: str = ""):
        super().__init__(message)
        self.reason = reason
        self.cause = cause or message


def _format_milli(milli: int) -> str:
    """resource.NewMilliQuantity(milli, DecimalSI).String()."""
    return str(Quantity(Fraction(milli, 1000)))


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"
    component = "horizontal-pod-autoscaler"
    service_account = "horizontal-pod-autoscaler"
    workers = 1

    def setup(self) -> None:
        self.hpas = self.informer(HPAS)
        self.hpas.add_handlers(self.enqueue_object, self._hpa_updated, self._hpa_deleted)
        self.pods = self.informer(PODS)
        source = self.settings.hpa_metrics_source
        self.calculator = ReplicaCalculator(
            source(self.client) if source is not None else ResourceMetricsAPI(self.client),
            tolerance=self.settings.hpa_tolerance,
            cpu_initialization_period=self.settings.hpa_cpu_initialization_period,
            initial_readiness_delay=self.settings.hpa_initial_readiness_delay)
        self.histories: dict[str, ScalingHistory] = {}

    def _hpa_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old.get("spec") != new.get("spec"):  # not our own status writes
            self.enqueue_object(new)

    def _hpa_deleted(self, hpa: dict[str, Any]) -> None:
        self.enqueue_object(hpa)

    async def reconcile(self, key: str) -> float | None:
        hpa = self.hpas.get(key)
        if hpa is None:
            self.histories.pop(key, None)
            return None
        history = self.histories.get(key)
        if history is None:
            history = self.histories[key] = ScalingHistory(
                self.settings.hpa_downscale_stabilization)
        await Autoscaling(self, copy.deepcopy(hpa), history).run()
        return self.settings.hpa_sync_period


class Autoscaling:
    """One look at one HPA (upstream's reconcileAutoscaler), on a copy of it."""

    def __init__(self, controller: HorizontalPodAutoscalerController, hpa: dict[str, Any],
                 history: ScalingHistory):
        self.controller = controller
        self.client = controller.client
        self.hpa = hpa
        self.history = history
        self.original = copy.deepcopy(hpa.get("status") or {})
        self.status = copy.deepcopy(self.original)
        self.status.setdefault("conditions", [])
        self.namespace = hpa["metadata"]["namespace"]

    async def event(self, kind: str, reason: str, message: str) -> None:
        await self.controller.record(HPAS, self.hpa, kind, reason, message)

    def condition(self, kind: str, status: str, reason: str, message: str) -> None:
        conditions = self.status["conditions"]
        current = next((c for c in conditions if c.get("type") == kind), None)
        if current is None:
            current = {"type": kind}
            conditions.append(current)
        if current.get("status") != status:
            current["lastTransitionTime"] = timestamps.now()
        current.update(status=status, reason=reason, message=message)

    async def run(self) -> None:
        spec = self.hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind')}/{self.namespace}/{ref.get('name')}"
        try:
            resource, scale = await self._get_scale(ref)
        except (errors.StatusError, LookupError) as exc:
            message = exc.message if isinstance(exc, errors.StatusError) else str(exc)
            await self.event("Warning", "FailedGetScale", message)
            self.condition("AbleToScale", "False", "FailedGetScale",
                           f"the HPA controller was unable to get the target's current "
                           f"scale: {message}")
            await self._write_status()
            return
        self.condition("AbleToScale", "True", "SucceededGetScale",
                       "the HPA controller was able to get the target's current scale")
        current = (scale.get("spec") or {}).get("replicas", 0)
        self.history.record_initial(current)
        minimum = spec.get("minReplicas")
        minimum = 1 if minimum is None else minimum
        maximum = spec.get("maxReplicas", 0)
        desired, reason, statuses = 0, "", None
        if current == 0 and minimum != 0:
            rescale = False
            self.condition("ScalingActive", "False", "ScalingDisabled",
                           "scaling is disabled since the replica count of the target is zero")
        elif current > maximum:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", maximum
            rescale = True
        elif current < minimum:
            reason, desired = "Current number of replicas below Spec.MinReplicas", minimum
            rescale = True
        else:
            try:
                proposal, metric, statuses = await self._compute(scale, current,
                                                                 spec.get("metrics") or [])
            except ComputeError as exc:
                self._set_status(current, self.status.get("desiredReplicas", 0), statuses,
                                 False)
                await self._write_status()
                await self.event("Warning", "FailedComputeMetricsReplicas", str(exc))
                log.debug("failed to compute desired number of replicas based on listed "
                          "metrics for %s: %s", reference, exc)
                return
            desired = proposal
            if desired > current:
                reason = f"{metric} above target"
            elif desired < current:
                reason = "All metrics below target"
            behavior = spec.get("behavior")
            if behavior:
                normalized = self.history.normalize_with_behavior(behavior, current, desired,
                                                                  minimum, maximum)
            else:
                normalized = self.history.normalize(current, desired, minimum, maximum)
            self.condition("AbleToScale", *normalized.able_to_scale)
            self.condition("ScalingLimited", *normalized.scaling_limited)
            desired = normalized.replicas
            rescale = desired != current
        if rescale:
            try:
                await self.client.update(resource, {**scale, "spec": {"replicas": desired}},
                                         "scale")
            except errors.StatusError as exc:
                await self.event("Warning", "FailedRescale", f"New size: {desired}; reason: "
                                 f"{reason}; error: {exc.message}")
                self.condition("AbleToScale", "False", "FailedUpdateScale",
                               f"the HPA controller was unable to update the target scale: "
                               f"{exc.message}")
                self._set_status(current, self.status.get("desiredReplicas", 0),
                                 self.status.get("currentMetrics"), False)
                await self._write_status()
                return
            self.condition("AbleToScale", "True", "SucceededRescale",
                           f"the HPA controller was able to update the target scale to "
                           f"{desired}")
            await self.event("Normal", "SuccessfulRescale",
                             f"New size: {desired}; reason: {reason}")
            self.history.record_scale(spec.get("behavior"), current, desired)
            log.info("successful rescale of %s, old size: %d, new size: %d, reason: %s",
                     reference, current, desired, reason)
        else:
            desired = current
        self._set_status(current, desired, statuses, rescale)
        await self._write_status()

    async def _get_scale(self, ref: dict[str, Any]) -> tuple[Resource, dict[str, Any]]:
        group = (ref.get("apiVersion") or "").rpartition("/")[0]
        resource = SCALABLE.get((group, ref.get("kind")))
        if resource is None:
            raise LookupError(f'no matches for kind "{ref.get("kind")}" in group "{group}"')
        scale = await self.client.transport.call(
            "GET", Ref(resource, self.namespace, ref.get("name"), "scale"))
        return resource, scale

    # --- metrics ----------------------------------------------------------------------------

    async def _compute(self, scale: dict[str, Any], current: int, specs: list[dict[str, Any]]
                       ) -> tuple[int, str, list[dict[str, Any]]]:
        """(replicas, the winning metric's description, metric statuses), upstream's
        computeReplicasForMetrics; ComputeError when no usable proposal is left."""
        selector = (scale.get("status") or {}).get("selector") or ""
        if not selector:
            await self.event("Warning", "SelectorRequired", "selector is required")
            self.condition("ScalingActive", "False", "InvalidSelector",
                           "the HPA target's scale is missing a selector")
            raise ComputeError("selector is required", "InvalidSelector")
        try:
            matches = selectors.label_matcher(selector)
        except ValueError as exc:
            message = (f"couldn't convert selector into a corresponding internal selector "
                       f"object: {exc}")
            await self.event("Warning", "InvalidSelector", message)
            self.condition("ScalingActive", "False", "InvalidSelector", message)
            raise ComputeError(message, "InvalidSelector") from None
        pods = [p for p in self.controller.pods.list(self.namespace) if matches(p)]
        replicas, metric, statuses = 0, "", []
        invalid, first_error = 0, None
        for spec in specs:
            try:
                proposal, name, status = await self._compute_metric(spec, current, selector,
                                                                    pods)
            except ComputeError as exc:
                if first_error is None:
                    first_error = exc
                invalid += 1
                continue
            statuses.append(status)
            if replicas == 0 or proposal > replicas:
                replicas, metric = proposal, name
        if first_error is not None and (invalid >= len(specs) or replicas < current):
            self.condition("ScalingActive", "False", first_error.reason,
                           f"the HPA was unable to compute the replica count: "
                           f"{first_error.cause}")
            raise ComputeError(f"invalid metrics ({invalid} invalid out of {len(specs)}), "
                               f"first error is: {first_error}", first_error.reason)
        self.condition("ScalingActive", "True", "ValidMetricFound",
                       f"the HPA was able to successfully calculate a replica count from "
                       f"{metric}")
        return replicas, metric, statuses

    async def _compute_metric(self, spec: dict[str, Any], current: int, selector: str,
                              pods: list[dict[str, Any]]) -> tuple[int, str, dict[str, Any]]:
        kind = spec.get("type")
        if kind == "Resource":
            source, container, reason = spec.get("resource") or {}, "", \
                "FailedGetResourceMetric"
            wrap = "failed to get {} resource metric value: {}"
        elif kind == "ContainerResource":
            source = spec.get("containerResource") or {}
            container, reason = source.get("container") or "", \
                "FailedGetContainerResourceMetric"
            wrap = "failed to get {} container metric value: {}"
        elif kind in ("Pods", "Object"):
            name = ((spec.get(kind.lower()) or {}).get("metric") or {}).get("name")
            await self._fail(f"Failed{'GetPodsMetric' if kind == 'Pods' else 'GetObjectMetric'}",
                             f"unable to get metric {name}: unable to fetch metrics from custom "
                             f"metrics API: no custom metrics API (custom.metrics.k8s.io) "
                             f"registered", f"failed to get {kind.lower()} metric value: {{}}")
        elif kind == "External":
            name = ((spec.get("external") or {}).get("metric") or {}).get("name")
            await self._fail("FailedGetExternalMetric",
                             f"unable to get external metric {self.namespace}/{name}: unable to "
                             f"fetch metrics from external metrics API: no external metrics "
                             f"API (external.metrics.k8s.io) registered",
                             f"failed to get external metric {name}: {{}}")
        else:
            await self._fail("InvalidMetricSourceType", f'unknown metric source type "{kind}"',
                             "{}")
        resource = source.get("name") or ""
        target = source.get("target") or {}
        calc = self.controller.calculator
        try:
            if target.get("averageValue") is not None:
                try:
                    found = await calc.average_value_replicas(
                        current, Quantity.parse(target["averageValue"]).milli(), resource,
                        self.namespace, selector, pods, container)
                except MetricsError as exc:
                    raise MetricsError(f"failed to get {resource} usage: {exc}") from exc
                name = f"{resource} {'container resource' if container else 'resource'}"
                current_value = {"averageValue": _format_milli(found.average)}
            elif target.get("averageUtilization") is not None:
                try:
                    found = await calc.utilization_replicas(
                        current, target["averageUtilization"], resource, self.namespace,
                        selector, pods, container)
                except MetricsError as exc:
                    raise MetricsError(f"failed to get {resource} utilization: {exc}") from exc
                name = (f"{resource} {'container resource' if container else 'resource'} "
                        f"utilization (percentage of request)")
                current_value = {"averageUtilization": found.utilization,
                                 "averageValue": _format_milli(found.average)}
            else:
                raise MetricsError("invalid resource metric source: neither an average "
                                   "utilization target nor an average value (usage) target "
                                   "was set")
        except MetricsError as exc:
            await self._fail(reason, str(exc), wrap.format(resource, "{}"))
        if container:
            status = {"type": "ContainerResource", "containerResource": {
                "name": resource, "container": container, "current": current_value}}
        else:
            status = {"type": "Resource", "resource": {"name": resource,
                                                       "current": current_value}}
        return found.replicas, name, status

    async def _fail(self, reason: str, message: str, wrap: str) -> None:
        """upstream's getUnableComputeReplicaCountCondition: an Event with the metric's
        error, and ComputeError for computeReplicasForMetrics."""
        await self.event("Warning", reason, message)
        raise ComputeError(wrap.format(message), reason, message)

    # --- status -----------------------------------------------------------------------------

    def _set_status(self, current: int, desired: int, metrics: list[dict[str, Any]] | None,
                    rescaled: bool) -> None:
        status = {"currentReplicas": current, "desiredReplicas": desired}
        if self.status.get("lastScaleTime"):
            status["lastScaleTime"] = self.status["lastScaleTime"]
        if rescaled:
            status["lastScaleTime"] = timestamps.now()
        if metrics:
            status["currentMetrics"] = metrics
        status["conditions"] = self.status["conditions"]
        if self.status.get("observedGeneration") is not None:
            status["observedGeneration"] = self.status["observedGeneration"]
        self.status = status

    async def _write_status(self) -> None:
        if not self.status.get("conditions"):
            self.status.pop("conditions", None)
        if self.status == self.original:
            return
        try:
            await self.client.update_status(HPAS, {**self.hpa, "status": self.status})
        except errors.StatusError as exc:
            if isinstance(exc, errors.Conflict):
                raise
            await self.event("Warning", "FailedUpdateStatus", exc.message)
            raise
