"""From a metrics recommendation to the replica count an HPA sets: stabilization and rate
limits (upstream's normalizeDesiredReplicas and normalizeDesiredReplicasWithBehaviors in
pkg/controller/podautoscaler/horizontal.go).

`ScalingHistory` is the controller's memory of one HPA (upstream keeps it in maps keyed by
the HPA, lost on restart as upstream's is): the recent unstabilized recommendations and the
recent scale events up and down. Each `normalize` returns the count with the AbleToScale and
ScalingLimited conditions (status, reason, message) the HPA gets.

Without `spec.behavior`: the count is the highest recommendation of the downscale
stabilization window (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min), clamped
to [minReplicas, min(maxReplicas, max(2 * current, 4))].
With it: the recommendation is held between the lowest of the scaleUp window and the highest
of the scaleDown window (a nil scaleDown window is the flag's), then limited by the
policies: per policy, from the replicas at the start of its period (current minus the changes
of the period), `Pods` adds or removes `value`, `Percent` scales by value% (up rounded up,
down rounded down); `selectPolicy` Max takes the largest change, Min the smallest, Disabled
none; and [minReplicas, maxReplicas] bound it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

Condition = tuple[str, str, str]  # status, reason, message
INT32_MAX, INT32_MIN = 2 ** 31 - 1, -(2 ** 31)
SCALE_UP_LIMIT_FACTOR, SCALE_UP_LIMIT_MINIMUM = 2.0, 4.0


@dataclasses.dataclass
class ScaleEvent:
    change: int
    timestamp: float
    outdated: bool = False


@dataclasses.dataclass
class Normalized:
    replicas: int
    able_to_scale: Condition
    scaling_limited: Condition


class ScalingHistory:
    def __init__(self, downscale_stabilization: float = 300.0,
                 clock: Callable[[], float] = time.time):
        self.downscale_stabilization = downscale_stabilization
        self.clock = clock
        self.recommendations: list[tuple[int, float]] = []
        self.scale_up_events: list[ScaleEvent] = []
        self.scale_down_events: list[ScaleEvent] = []

    def record_initial(self, current: int) -> None:
        if not self.recommendations:
            self.recommendations.append((current, self.clock()))

    def _remember(self, recommendation: int, older_than: float) -> None:
        """Replace a sample older than `older_than` seconds, or add one."""
        now = self.clock()
        for index, (_, when) in enumerate(self.recommendations):
            if when < now - older_than:
                self.recommendations[index] = (recommendation, now)
                return
        self.recommendations.append((recommendation, now))

    # --- without behavior -------------------------------------------------------------------

    def normalize(self, current: int, desired: int, minimum: int, maximum: int) -> Normalized:
        now = self.clock()
        stabilized = desired
        for recommendation, when in self.recommendations:
            if when >= now - self.downscale_stabilization:
                stabilized = max(stabilized, recommendation)
        self._remember(desired, self.downscale_stabilization)
        if stabilized != desired:
            able = ("True", "ScaleDownStabilized", "recent recommendations were higher than "
                    "current one, applying the highest recent recommendation")
        else:
            able = ("True", "ReadyForNewScale", "recommended size matches current size")
        limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
        if maximum > limit:
            upper, reason, message = limit, "ScaleUpLimit", \
                "the desired replica count is increasing faster than the maximum scale rate"
        else:
            upper, reason, message = maximum, "TooManyReplicas", \
                "the desired replica count is more than the maximum replica count"
        if stabilized < minimum:
            replicas, reason, message = minimum, "TooFewReplicas", \
                "the desired replica count is less than the minimum replica count"
        elif stabilized > upper:
            replicas = upper
        else:
            replicas, reason, message = stabilized, "DesiredWithinRange", \
                "the desired count is within the acceptable range"
        limited = "False" if replicas == stabilized else "True"
        return Normalized(replicas, able, (limited, reason, message))

    # --- with behavior ----------------------------------------------------------------------

    def normalize_with_behavior(self, behavior: dict[str, Any], current: int, desired: int,
                                minimum: int, maximum: int) -> Normalized:
        up = behavior.get("scaleUp") or {}
        down = dict(behavior.get("scaleDown") or {})
        if down.get("stabilizationWindowSeconds") is None:
            down["stabilizationWindowSeconds"] = int(self.downscale_stabilization)
        stabilized = self._stabilize(up, down, current, desired)
        if stabilized != desired:
            if desired >= current:
                able = ("True", "ScaleUpStabilized", "recent recommendations were lower than "
                        "current one, applying the lowest recent recommendation")
            else:
                able = ("True", "ScaleDownStabilized", "recent recommendations were higher "
                        "than current one, applying the highest recent recommendation")
        else:
            able = ("True", "ReadyForNewScale", "recommended size matches current size")
        replicas, reason, message = self._rate_limited(up, down, current, stabilized, minimum,
                                                       maximum)
        limited = "False" if replicas == stabilized else "True"
        return Normalized(replicas, able, (limited, reason, message))

    def _stabilize(self, up: dict[str, Any], down: dict[str, Any], current: int,
                   desired: int) -> int:
        now = self.clock()
        up_window = up.get("stabilizationWindowSeconds") or 0
        down_window = down.get("stabilizationWindowSeconds") or 0
        up_recommendation = down_recommendation = desired
        for recommendation, when in self.recommendations:
            if when > now - up_window:
                up_recommendation = min(up_recommendation, recommendation)
            if when > now - down_window:
                down_recommendation = max(down_recommendation, recommendation)
        self._remember(desired, max(up_window, down_window))
        return min(max(current, up_recommendation), down_recommendation)

    def _rate_limited(self, up: dict[str, Any], down: dict[str, Any], current: int,
                      desired: int, minimum: int, maximum: int) -> tuple[int, str, str]:
        if desired > current:
            limit = max(self.scale_up_limit(current, up), current)
            if maximum > limit:
                allowed, reason, message = limit, "ScaleUpLimit", "the desired replica " \
                    "count is increasing faster than the maximum scale rate"
            else:
                allowed, reason, message = maximum, "TooManyReplicas", "the desired " \
                    "replica count is more than the maximum replica count"
            if desired > allowed:
                return allowed, reason, message
        elif desired < current:
            limit = min(self.scale_down_limit(current, down), current)
            if minimum < limit:
                allowed, reason, message = limit, "ScaleDownLimit", "the desired replica " \
                    "count is decreasing faster than the maximum scale rate"
            else:
                allowed, reason, message = minimum, "TooFewReplicas", "the desired " \
                    "replica count is less than the minimum replica count"
            if desired < allowed:
                return allowed, reason, message
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def _changes(self, period: float, events: list[ScaleEvent]) -> int:
        cutoff = self.clock() - period
        return sum(e.change for e in events if e.timestamp > cutoff)

    def _period_start(self, current: int, period: float) -> int:
        return current - self._changes(period, self.scale_up_events) + \
            self._changes(period, self.scale_down_events)

    def scale_up_limit(self, current: int, rules: dict[str, Any]) -> int:
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        result, pick = (INT32_MAX, min) if select == "Min" else (INT32_MIN, max)
        for policy in rules.get("policies") or ():
            start = self._period_start(current, policy.get("periodSeconds", 0))
            if policy.get("type") == "Pods":
                proposed = start + policy.get("value", 0)
            else:  # Percent: rounded up, or a small target would never grow
                proposed = math.ceil(start * (1 + policy.get("value", 0) / 100))
            result = pick(result, proposed)
        return result

    def scale_down_limit(self, current: int, rules: dict[str, Any]) -> int:
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        result, pick = (INT32_MIN, max) if select == "Min" else (INT32_MAX, min)
        for policy in rules.get("policies") or ():
            start = self._period_start(current, policy.get("periodSeconds", 0))
            if policy.get("type") == "Pods":
                proposed = start - policy.get("value", 0)
            else:
                proposed = int(start * (1 - policy.get("value", 0) / 100))
            result = pick(result, proposed)
        return result

    def record_scale(self, behavior: dict[str, Any] | None, previous: int, new: int) -> None:
        """Remember a rescale for the rate limits (only behaviors have them), reusing an
        event older than the longest policy period."""
        if not behavior:
            return
        rules = behavior.get("scaleUp") if new > previous else behavior.get("scaleDown")
        events = self.scale_up_events if new > previous else self.scale_down_events
        longest = max((p.get("periodSeconds", 0) for p in (rules or {}).get("policies") or ()),
                      default=0)
        now = self.clock()
        for event in events:
            if event.timestamp < now - longest:
                event.outdated = True
        event = ScaleEvent(abs(new - previous), now)
        for index, old in enumerate(events):
            if old.outdated:
                events[index] = event
                return
        events.append(event)
