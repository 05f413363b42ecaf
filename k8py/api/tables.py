"""Server-side printing: `meta.k8s.io/v1` Tables, with upstream's columns for common kinds.

`kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints the cells
as they come, so the columns and cell texts (`printers`) are what users see. They follow upstream's
printers (pkg/printers/internalversion/printers.go): column names in Title Case (kubectl
upper-cases them), `priority: 1` for the `-o wide` extras, ages as `duration.HumanDuration`
writes them. Kinds without a printer get NAME and AGE, as upstream prints custom resources
without printer columns; Roles and ClusterRoles, which have no printer upstream either, get
the API server's default table (NAME, CREATED AT) as upstream's do.
"""

from __future__ import annotations

import datetime
from typing import Any

from k8py.api.cells import Column, Obj, human_duration
from k8py.api.printers import columns_for

__all__ = ["human_duration", "table"]


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
