"""The optional ``inference`` section of the site config: where models live and how they run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kernel.config_base import RelPath, StrictModel

PACKAGED_MODELS = Path(__file__).resolve().parent / "files"


class InferenceConfig(StrictModel):
    """Model directory, runtime and threads for every model the agent runs."""

    models_dir: RelPath | None = Field(
        default=None,
        description="Directory of <name>.tflite + <name>.yaml pairs; default: the models packaged with the agent.",
    )
    num_threads: int | None = Field(
        default=None, ge=1, le=64, description="Interpreter threads; default all cores."
    )
    backend: Literal["litert", "tflite_runtime"] | None = Field(
        default=None, description="Force one runtime; default ai-edge-litert, else tflite-runtime."
    )
    reload_check_s: float = Field(
        default=30.0, ge=0, le=86400, description="How often changed model files are reloaded; 0 disables."
    )
