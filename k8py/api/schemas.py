"""The upstream schemas of the built-in kinds, from the published data (not retyped).

The `kubernetes-validate` package ships the JSON schemas that upstream's OpenAPI documents
produce, per Kubernetes version, including `x-kubernetes-group-version-kind`,
`x-kubernetes-patch-strategy`/`-patch-merge-key` and list-map keys. k8py reads the v1.32
definitions once, on first use, and answers questions about them: which definition describes
a kind, and how a field patches. (OpenAPI serving and strict field validation will read them
here too.)
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k8py.api.resources import Resource

SCHEMA_VERSION = "v1.32.0"


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    import kubernetes_validate  # the data package; imported only when schemas are needed

    path = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
                        f"{SCHEMA_VERSION}-local", "_definitions.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["$defs"]


@functools.cache
def _by_kind() -> dict[tuple[str, str, str], str]:
    index = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    return index


class Node:
    """A position in a schema: what a field holds and how it patches. Children are made once
    and kept, so walking the same schema again (every write does) costs dictionary lookups."""

    __slots__ = ("schema", "definition", "json_types", "python_types", "_children")

    def __init__(self, schema: dict[str, Any]):
        ref = schema.get("$ref")
        # the definition's name (`io.k8s.api.core.v1.PodSpec`) when this node is one
        self.definition = ref.rsplit("/", 1)[-1] if ref else ""
        self.schema = _resolve(schema)
        # the JSON types a value here may have ("string", "integer", ...); () = any
        self.json_types = _json_types(self.schema)
        # the classes a decoded JSON value of those types has (every class when unsaid)
        self.python_types = frozenset(
            cls for kind in self.json_types for cls in _PYTHON_TYPES.get(kind, ()))
        self._children: dict[str, Node | None] = {}

    def field(self, name: str) -> Node | None:
        try:
            return self._children[name]
        except KeyError:
            pass
        prop = (self.schema.get("properties") or {}).get(name)
        if prop is None:
            if name:  # every key of a free-form map shares one node: the cache stays bounded
                return self.field("")
            extra = self.schema.get("additionalProperties")
            node = Node(extra) if isinstance(extra, dict) else None
        else:
            node = Node(prop)
        self._children[name] = node
        return node

    def items(self) -> Node | None:
        try:
            return self._children["[]"]
        except KeyError:
            items = self.schema.get("items")
            node = self._children["[]"] = Node(items) if isinstance(items, dict) else None
            return node

    @property
    def patch_strategies(self) -> set[str]:
        return set(filter(None, self.schema.get("x-kubernetes-patch-strategy", "").split(",")))

    @property
    def merge_key(self) -> str | None:
        return self.schema.get("x-kubernetes-patch-merge-key")


_PYTHON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float),
                 "boolean": (bool,), "object": (dict,), "array": (list,)}


def _json_types(schema: dict[str, Any]) -> tuple[str, ...]:
    """The non-null JSON types a schema admits: its `type`, or the types of its `oneOf`
    choices (IntOrString, Quantity); () when it does not say."""
    choices = [schema, *schema.get("oneOf", ())] if "oneOf" in schema else [schema]
    found: list[str] = []
    for choice in choices:
        kinds = choice.get("type")
        for kind in [kinds] if isinstance(kinds, str) else kinds or ():
            if kind != "null" and kind not in found:
                found.append(kind)
    return tuple(found)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a $ref, keeping the referring node's own patch extensions (they live beside it)."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    target = definitions()[ref.rsplit("/", 1)[-1]]
    own = {k: v for k, v in schema.items() if k.startswith("x-kubernetes-patch")}
    return {**target, **own} if own else target


def kind_definition(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind (`io.k8s.api.apps.v1.Deployment`), or None."""
    return _by_kind().get((group, version, kind))


@functools.lru_cache(maxsize=None)
def for_kind(group: str, version: str, kind: str) -> Node | None:
    """The schema of a built-in kind, or None (custom resources, unknown kinds)."""
    name = kind_definition(group, version, kind)
    return Node({"$ref": f"#/$defs/{name}"}) if name else None


def for_resource(resource: Resource) -> Node | None:
    """The schema of a resource's kind when it is a built-in one; None for custom
    resources (their CRD's schema is `resource.schema`)."""
    return None if resource.custom else for_kind(resource.group, resource.version,
                                                 resource.kind)


@functools.cache
def object_metadata() -> Node:
    """A schema holding just `metadata` (an ObjectMeta): what every kind's objects have,
    custom resources included."""
    return Node({"type": "object", "properties": {
        "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}}})
