"""One model registry per process, shared by every source that runs a model."""

from __future__ import annotations

import threading

from models.config import PACKAGED_MODELS, InferenceConfig
from models.registry import ModelRegistry

_REGISTRIES: dict[tuple[str, int | None, str | None], ModelRegistry] = {}
_LOCK = threading.Lock()


def registry_for(cfg: InferenceConfig | None) -> ModelRegistry:
    """The registry for this inference config (created on first use, then shared)."""
    cfg = cfg or InferenceConfig()
    directory = cfg.models_dir or PACKAGED_MODELS
    key = (str(directory), cfg.num_threads, cfg.backend)
    with _LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = ModelRegistry(directory, num_threads=cfg.num_threads, backend=cfg.backend)
            _REGISTRIES[key] = registry
        return registry
