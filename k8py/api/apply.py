"""Server-side apply and managedFields bookkeeping, after upstream's structured-merge-diff.

Every write records who changed what in `metadata.managedFields`: one entry per (manager,
operation), `operation: Apply` for server-side apply and `Update` for everything else, with
the owned paths as FieldsV1 (see `fieldsets`). A write that carries well-formed
managedFields of its own (not to a subresource) makes them the base, as upstream does.

Applying a configuration as manager M:
1. The configuration's field set C. Fields that M applied last time but left out now are
   removed from the object unless another manager owns them too.
2. Conflicts: a leaf field in C whose applied value differs from the live one and that
   another manager owns is a conflict (409, one cause per field naming its owner, the path
   written as structured-merge-diff writes it), unless `force`, which takes ownership from
   them. Maps and list-map elements conflict only through their leaves. As upstream's
   lastAppliedManager, `kubectl apply --server-side` (manager `kubectl`) forces conflicts
   that all lie within the object's last-applied-configuration (a client-side apply's).
3. The configuration is merged into the live object (maps merge, keyed lists merge by key,
   other lists are replaced: the strategic merge of `strategic`, which follows the same
   schema), M's Apply entry becomes C, and fields M now holds alone leave other managers'
   sets when forced or changed.
Fields applied with equal values are shared: both managers keep them.
"""

from __future__ import annotations

import json
from typing import Any

from k8py.api import errors, fieldsets
from k8py.api.fieldsets import Path
from k8py.api.jsondoc import clone
from k8py.api.schemas import Node
from k8py.api.strategic import strategic_merge_patch
from k8py.api.timestamps import now

# metadata fields no manager owns
_UNOWNED = {("f:metadata", "f:" + f) for f in (
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")}
_TOP_UNOWNED = {("f:apiVersion",), ("f:kind",)}


def _owned(paths: set[Path]) -> set[Path]:
    """paths without the ones the system owns (identity metadata, apiVersion, kind)."""
    return {p for p in paths if p[:2] not in _UNOWNED and p not in _TOP_UNOWNED}


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(e) for e in (obj.get("metadata") or {}).get("managedFields") or []]


def _sent_entries(new: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The managedFields a write carries, when they are well formed: upstream takes them as
    the new base (clients may rewrite managedFields, as kubectl's client-side-apply to
    server-side-apply upgrade does); None otherwise (the stored ones stay the base)."""
    sent = (new.get("metadata") or {}).get("managedFields")
    if not isinstance(sent, list) or not sent:
        return None
    for entry in sent:
        if not isinstance(entry, dict) or not isinstance(entry.get("manager"), str) or \
                entry.get("operation") not in ("Apply", "Update") or \
                not isinstance(entry.get("fieldsV1"), dict):
            return None
    return [dict(e) for e in sent]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path],
           subresource: str = "") -> dict[str, Any]:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
             "time": now(), "fieldsType": "FieldsV1",
             "fieldsV1": fieldsets.to_fields_v1(paths)}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _with_entries(obj: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    obj = {**obj, "metadata": {**obj["metadata"]}}
    kept = [e for e in entries if e.get("fieldsV1")]
    if kept:
        obj["metadata"]["managedFields"] = kept
    else:
        obj["metadata"].pop("managedFields", None)
    return obj


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str,
                  api_version: str, schema: Node | None, subresource: str = "") -> dict:
    """new with managedFields: manager owns what it changed, taken from the others. Trees
    are edited path by path, never rebuilt: an update costs what it changed."""
    entries = _sent_entries(new) if subresource == "" else None
    if entries is None:
        entries = _entries(old) if old is not None else []
    changed = _owned(fieldsets.changed_paths(old or {}, _strip(new), schema)
                     if old is not None else fieldsets.field_set(_strip(new), schema))
    if subresource != "status":
        changed = {p for p in changed if p[:1] != ("f:status",)}
    if not changed:
        return _with_entries(new, entries)
    mine = None
    for entry in entries:
        if entry.get("manager") == manager and entry.get("operation") == "Update" and \
                entry.get("subresource", "") == subresource:
            mine = entry
            continue
        tree = clone(entry.get("fieldsV1") or {})
        if any([fieldsets.tree_discard(tree, path) for path in changed]):
            entry["fieldsV1"] = tree
    if mine is None:
        mine = _entry(manager, "Update", api_version, set(), subresource)
        entries.append(mine)
    tree = clone(mine.get("fieldsV1") or {})
    for path in changed:
        fieldsets.tree_add(tree, path)
    mine.update(fieldsV1=tree, time=now(), apiVersion=api_version)
    return _with_entries(new, entries)


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    obj = {**obj, "metadata": {k: v for k, v in (obj.get("metadata") or {}).items()
                               if k != "managedFields"}}
    return obj


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool,
          api_version: str, schema: Node | None) -> dict[str, Any]:
    """The object after manager applies config (see module docstring); raises Conflict."""
    config = _strip(config)
    applied = _owned(fieldsets.field_set(config, schema))
    applied = {p for p in applied if p[:1] != ("f:status",)}
    if live is None:
        return _with_entries(config, [_entry(manager, "Apply", api_version, applied)])

    entries = _entries(live)
    others: list[tuple[dict[str, Any], set[Path]]] = []
    previous: set[Path] = set()
    for entry in entries:
        paths = fieldsets.from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            previous = paths
        else:
            others.append((entry, paths))

    current = _strip(live)
    conflicts = []
    # Only leaves conflict, as structured-merge-diff compares them: a map or a list-map
    # element whose leaves the config names conflicts only through those leaves that differ.
    parents = {path[:i] for path in applied for i in range(1, len(path))}
    for path in sorted(applied - parents):
        found, live_value = fieldsets.lookup(current, path, schema)
        _, new_value = fieldsets.lookup(config, path, schema)
        if not found or live_value == new_value:
            continue
        owners = [e for e, paths in others if path in paths]
        if owners:
            conflicts.append((path, owners))
    if conflicts and not force:
        if not _upgrades_client_side_apply(live, manager, schema,
                                           {path for path, _ in conflicts}):
            raise _conflict_error(conflicts)

    merged = strategic_merge_patch(current, clone(config), schema)
    others_paths = set().union(*(paths for _, paths in others)) if others else set()
    removed: list[Path] = []
    for path in sorted(previous - applied - others_paths, key=len):
        if any(path[:len(r)] == r for r in removed):
            continue  # inside something already removed (a list element takes its fields)
        fieldsets.remove(merged, path, schema)
        removed.append(path)

    taken = {path for path, _ in conflicts}
    new_entries = []
    for entry, paths in others:
        entry["fieldsV1"] = fieldsets.to_fields_v1(paths - taken)
        new_entries.append(entry)
    new_entries.append(_entry(manager, "Apply", api_version, applied))
    return _with_entries(merged, new_entries)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _upgrades_client_side_apply(live: dict[str, Any], manager: str, schema: Node | None,
                                conflicting: set[Path]) -> bool:
    """Upstream's lastAppliedManager: `kubectl apply --server-side` (manager `kubectl`) on
    an object last applied client-side forces the conflicts that lie within the fields of
    its last-applied-configuration: the user's own earlier apply, not someone else's."""
    if manager != "kubectl":
        return False
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return False
    if not isinstance(last, dict):
        return False
    return conflicting <= _owned(fieldsets.field_set(_strip(last), schema))


def _conflict_error(conflicts: list[tuple[Path, list[dict[str, Any]]]]) -> errors.Conflict:
    """upstream's wording: `Apply failed with 1 conflict: conflict with "m" using apps/v1:
    .spec.replicas`, fields grouped by manager when there are several."""
    by_owner: dict[tuple[str, str], list[str]] = {}
    causes = []
    for path, owners in conflicts:
        for owner in owners:
            key = (owner.get("manager", ""), owner.get("apiVersion", ""))
            by_owner.setdefault(key, []).append(_dotted(path))
            causes.append({"reason": "FieldManagerConflict",
                           "message": f'conflict with "{key[0]}" using {key[1]}',
                           "field": _dotted(path)})
    count = len(causes)
    if count == 1:
        (manager, version), (field,) = next(iter(by_owner.items()))
        text = f'Apply failed with 1 conflict: conflict with "{manager}" using {version}: {field}'
    else:
        groups = [f'conflicts with "{m}" using {v}:\n' + "\n".join(f"- {f}" for f in fields)
                  for (m, v), fields in by_owner.items()]
        text = f"Apply failed with {count} conflicts: " + "\n".join(groups)
    return errors.Conflict(text, causes=causes)


def _dotted(path: Path) -> str:
    """A path as structured-merge-diff prints it: `.spec.containers[name="web"].image`, a
    set's value as `[="x"]`, an index as `[0]`."""
    out = ""
    for element in path:
        kind, rest = element[:2], element[2:]
        if kind == "f:":
            out += "." + rest
        elif kind == "k:":
            try:
                keys = json.loads(rest)
            except ValueError:
                keys = None
            if isinstance(keys, dict):
                out += "[" + ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                                      for k, v in keys.items()) + "]"
            else:
                out += "[" + rest + "]"
        elif kind == "v:":
            out += "[=" + rest + "]"
        else:
            out += "[" + rest + "]"
    return out


def manager_from(query_value: str | None, user_agent: str) -> str:
    """The field manager: `fieldManager`, else the client program's name (upstream)."""
    if query_value:
        return query_value
    name = user_agent.split("/", 1)[0].strip()
    return name or "unknown"


def parse_config(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.BadRequest("error decoding YAML: the apply configuration must be an "
                                "object")
    return json.loads(json.dumps(body))
