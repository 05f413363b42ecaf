"""Label and field selectors: parsing the query-string syntax and matching objects.

Label selectors follow `k8s.io/apimachinery/pkg/labels`: comma-separated requirements, each
`key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) or
`!key` (does not exist). Field selectors allow `=`, `==` and `!=` on dotted paths
(`metadata.name`, `status.phase`, `spec.nodeName`). A malformed selector raises `ValueError`
with a message the API server returns as a 400.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label too, as upstream
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in selector {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise ValueError(f"unbalanced parentheses in selector {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str, selector: str) -> str:
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise ValueError(f"invalid label key {key!r} in selector {selector!r}")
    return key


def _check_value(value: str, selector: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise ValueError(f"invalid label value {value!r} in selector {selector!r}")
    return value


def parse_label_selector(selector: str) -> list[Requirement]:
    selector = selector.strip()
    if not selector:
        return []
    requirements = []
    for part in _split_top_level(selector):
        part = part.strip()
        if not part:
            raise ValueError(f"empty requirement in selector {selector!r}")
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", part)
        if m:
            key = _check_key(m.group(1), selector)
            values = frozenset(_check_value(v.strip(), selector) for v in m.group(3).split(","))
            requirements.append(Requirement(key, m.group(2), values))
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", part)
        if m:
            op = "=" if m.group(2) in ("=", "==") else "!="
            key = _check_key(m.group(1), selector)
            requirements.append(Requirement(key, op, frozenset([_check_value(m.group(3),
                                                                              selector)])))
            continue
        if part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), selector), "!"))
            continue
        requirements.append(Requirement(_check_key(part, selector), "exists"))
    return requirements


def label_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    requirements = parse_label_selector(selector)

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return matches


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    terms = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ValueError(f"invalid field selector {selector!r}")
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field(obj, path) == value) == equal for path, equal, value in terms)

    return matches


def format_label_selector(selector: dict[str, Any] | None) -> str:
    """A metav1.LabelSelector as the query-string syntax (`app=web,tier in (a,b)`)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a metav1.LabelSelector (`matchLabels`, `matchExpressions`) selects labels.
    An empty selector selects everything; callers decide what a missing one means."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (op == "In" and labels.get(key) not in values) or (
                op == "NotIn" and present and labels[key] in values) or (
                op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True
