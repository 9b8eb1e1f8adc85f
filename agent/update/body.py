"""The body of an ``update`` command: what the centre signs, what the agent checks before anything changes."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Literal

from pydantic import Field, model_validator

from kernel.config_base import StrictModel

UPDATE_KIND = "update"
"""The command kind (and topic segment ``down/cmd/update``) of updates."""


class ModelPayload(StrictModel):
    """A model carried by an update: its manifest and its file, base64, with the file's sha256."""

    manifest: dict[str, Any] = Field(description="The model's manifest (models/manifest.py) as a mapping.")
    content_b64: str = Field(min_length=1, description="The .tflite file, base64.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def content(self) -> bytes:
        """The decoded file; ValueError when it is not base64 or does not hash to ``sha256``."""
        try:
            data = base64.b64decode(self.content_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"model.content_b64: not base64 ({exc})") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"model.sha256: the file hashes to {digest}, the update says {self.sha256}")
        return data


class UpdateBody(StrictModel):
    """One update. ``version`` numbers the site's configuration versions and only goes up, except
    in a signed rollback (``rollback: true``), which may name an older version kept on the site."""

    type: Literal["config", "model", "release"]
    version: int = Field(ge=1, description="The version this update installs.")
    rollback: bool = Field(default=False, description="Go back to an older version (kept on the site).")
    watch_s: float = Field(default=60.0, ge=1.0, le=86400.0, description="Health watch window after the switch.")
    min_success: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Poll success rate every device must keep; default the site's."
    )
    config: dict[str, Any] | None = Field(default=None, description="type config: the whole new site config.")
    patch: dict[str, Any] | None = Field(default=None, description="type config: an RFC 7396 merge patch.")
    base_version: int | None = Field(default=None, ge=0, description="The version the patch applies to.")
    model: ModelPayload | None = None
    release: str | None = Field(default=None, min_length=1, max_length=200, description="type release: the pin.")

    @model_validator(mode="after")
    def _shape(self) -> UpdateBody:
        if self.type == "config" and not self.rollback:
            if (self.config is None) == (self.patch is None):
                raise ValueError("a config update carries exactly one of config (whole) or patch")
            if self.patch is not None and self.base_version is None:
                raise ValueError("base_version: a patch names the version it applies to")
        if self.type == "model" and self.model is None:
            raise ValueError("model: a model update carries the model")
        if self.type == "release" and self.release is None:
            raise ValueError("release: a release update carries the release pin")
        return self
