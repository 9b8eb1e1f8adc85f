"""Building and validating the next version before anything changes: config, model, release pin."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from agent.config import SiteConfig, parse_config
from agent.update.body import UpdateBody
from agent.update.merge import apply_merge_patch
from agent.update.versions import Versions
from kernel.errors import ConfigError, ModelError, UpdateError
from kernel.kinds import KindRegistry


def candidate_document(body: UpdateBody, versions: Versions, current: int) -> dict[str, Any]:
    """The whole config document the update would install (config or release), or the base for a model."""
    if body.rollback and body.config is None and body.patch is None:
        if not versions.exists(body.version):
            raise UpdateError(f"rollback to version {body.version}: that version is not kept on this site")
        return versions.raw(body.version)
    if body.type == "config":
        if body.config is not None:
            return copy.deepcopy(body.config)
        if body.base_version != current:
            raise UpdateError(
                f"base_version: the patch applies to version {body.base_version}, this site runs {current}"
            )
        merged = apply_merge_patch(versions.raw(current), body.patch)
        if not isinstance(merged, dict):
            raise UpdateError("patch: the patched config is not a mapping")
        return merged
    return versions.raw(current)


def validate_document(
    doc: dict[str, Any], running: SiteConfig, base_dir: Path, version: int, kinds: KindRegistry | None = None
) -> SiteConfig:
    """What ``edge-agent config check`` checks, plus what an update must not change."""
    try:
        cfg = parse_config(doc, f"update version {version}", base_dir, kinds)
    except ConfigError as exc:
        raise UpdateError("config check failed: " + "; ".join(exc.problems)) from exc
    problems = []
    if cfg.site.id != running.site.id:
        problems.append(f"site.id: an update cannot change the site id ({running.site.id!r} -> {cfg.site.id!r})")
    if cfg.store.path != running.store.path:
        problems.append("store.path: an update cannot move the store (readings waiting there would be stranded)")
    if cfg.update is None or running.update is None or cfg.update.dir != running.update.dir:
        problems.append("update.dir: an update must keep the update section and its folder")
    if problems:
        raise UpdateError("; ".join(problems))
    return cfg


def stage_model(body: UpdateBody, doc: dict[str, Any], running: SiteConfig, stage: Path) -> dict[str, Any]:
    """Write the models of the new version into ``stage/models``, load the new one, point the config there."""
    from models.config import PACKAGED_MODELS
    from models.manifest import Manifest
    from models.registry import load_model

    assert body.model is not None
    try:
        manifest = Manifest.model_validate(body.model.manifest)
        content = body.model.content()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise UpdateError(f"model: {exc}") from exc
    models_dir = stage / "models"
    models_dir.mkdir()
    inference = running.inference
    source = (inference.models_dir if inference and inference.models_dir else None) or PACKAGED_MODELS
    if source.is_dir():
        for f in source.iterdir():
            if f.is_file() and f.suffix in (".yaml", ".tflite", ".txt"):
                shutil.copy2(f, models_dir / f.name)
    (models_dir / manifest.filename).write_bytes(content)
    manifest_path = models_dir / f"{manifest.name}.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest.model_dump(), sort_keys=False), encoding="utf-8")
    try:
        model = load_model(manifest_path, num_threads=1)
        import numpy as np

        # The heartbeat: the model must answer one inference on zeros of its declared inputs.
        if all(d > 0 for spec in manifest.inputs for d in spec.shape):
            model.invoke_raw([np.zeros(spec.shape, dtype=spec.dtype) for spec in manifest.inputs])
    except ModelError as exc:
        raise UpdateError(f"model refused: {exc}") from exc
    final_dir = stage.parent / stage.name.removesuffix(".staging") / "models"
    new = dict(doc)
    new["inference"] = {**(doc.get("inference") or {}), "models_dir": str(final_dir)}
    return new
