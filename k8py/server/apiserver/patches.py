"""A PATCH body applied to an object: JSON patch, merge patch or strategic merge patch,
with the patch machinery's errors mapped to upstream's codes once, here.

A patch that does not apply to the object (a failed `test`, a missing path) is a 422; a
malformed patch (a directive of the wrong shape) a 400; one that would do too much work (too
many JSON patch operations, too much copied) a 413. Server-side apply is `k8py.api.apply`.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, patching, strategic
from k8py.api.schemas import Node
from k8py.server.apiserver import bodies


def apply_patch(media_type: str, current: dict[str, Any], patch: Any,
                schema: Node | None) -> Any:
    """`current` with the patch applied (a new document); current is not modified."""
    try:
        if media_type == bodies.JSON_PATCH:
            return patching.json_patch(current, patch)
        if media_type == bodies.STRATEGIC_MERGE_PATCH:
            return strategic.strategic_merge_patch(current, patch, schema)
        return patching.merge_patch(current, patch)
    except patching.PatchFormatError as exc:
        raise errors.BadRequest(str(exc)) from None
    except patching.PatchTooLarge as exc:
        raise errors.RequestEntityTooLarge(str(exc)) from None
    except patching.PatchError as exc:
        raise errors.Invalid(str(exc)) from None
