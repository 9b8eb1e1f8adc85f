"""JSON merge patches (RFC 7396): apply one, or make the smallest one between two documents."""

from __future__ import annotations

from typing import Any


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` merged in (RFC 7396 section 2); neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def make_merge_patch(old: Any, new: Any) -> Any:
    """A merge patch that turns ``old`` into ``new``.

    RFC 7396 cannot express a ``null`` value inside an object (null means "remove"); documents with
    nulls must travel whole. :func:`patch_expresses` tells whether the patch is faithful.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = make_merge_patch(old[key], value)
    return patch


def patch_expresses(old: Any, new: Any, patch: Any) -> bool:
    """True when applying ``patch`` to ``old`` gives exactly ``new``."""
    return bool(apply_merge_patch(old, patch) == new)
