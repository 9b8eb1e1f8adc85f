"""The model registries of a run, shared by every source of that run that runs a model.

A service of the run context (``ModelRegistries.of(ctx)``), not a module global: two agents, or a
test and a rig, in one process load their models independently.
"""

from __future__ import annotations

import threading

from kernel.source import RunContext
from models.config import PACKAGED_MODELS, InferenceConfig
from models.registry import ModelRegistry


class ModelRegistries:
    """One :class:`ModelRegistry` per (model directory, threads, backend) within a run."""

    def __init__(self) -> None:
        self._registries: dict[tuple[str, int | None, str | None], ModelRegistry] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, ctx: RunContext) -> ModelRegistries:
        """The registries of the run ``ctx`` belongs to."""
        return ctx.services.get(cls)

    def for_config(self, cfg: InferenceConfig | None) -> ModelRegistry:
        """The registry for this inference config (created on first use, then shared)."""
        cfg = cfg or InferenceConfig()
        directory = cfg.models_dir or PACKAGED_MODELS
        key = (str(directory), cfg.num_threads, cfg.backend)
        with self._lock:
            registry = self._registries.get(key)
            if registry is None:
                registry = ModelRegistry(directory, num_threads=cfg.num_threads, backend=cfg.backend)
                self._registries[key] = registry
            return registry


def registry_for(cfg: InferenceConfig | None) -> ModelRegistry:
    """A new registry for this inference config (outside a run: tools and tests)."""
    return ModelRegistries().for_config(cfg)
