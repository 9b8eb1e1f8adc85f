"""One model registry per process, shared by every source that runs a model."""

from __future__ import annotations

import threading

from models.config import InferenceConfig
from models.registry import ModelRegistry

_REGISTRIES: dict[tuple[str, int | None, str | None], ModelRegistry] = {}
_LOCK = threading.Lock()


def registry_for(cfg: InferenceConfig | None) -> ModelRegistry:
    """The registry for this inference config (created on first use, then shared)."""
    cfg = cfg or InferenceConfig()
    key = (str(cfg.models_dir), cfg.num_threads, cfg.backend)
    with _LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = ModelRegistry(cfg.models_dir, num_threads=cfg.num_threads, backend=cfg.backend)
            _REGISTRIES[key] = registry
        return registry
