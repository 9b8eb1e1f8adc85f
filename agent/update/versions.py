"""Versions of the site configuration on disk, and the ``current`` pointer that selects one.

Layout under the site's ``update.dir``::

    versions/<n>/site.json     the whole validated config of version n (plus models/ for a model update)
    current -> versions/<n>    symlink, replaced by rename: the switch is one atomic step
    failed/<n>/                versions that failed their health watch, kept for the operator
    journal.json               agent/update/journal.py

Version 0 is the site's own config file (what the technician installed); it is never copied.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from agent.update.journal import fsync_dir, write_atomic
from kernel.config_files import load_yaml
from kernel.errors import UpdateError

CONFIG_NAME = "site.json"


class Versions:
    """The versions folder of one site."""

    def __init__(self, root: Path, bootstrap: Path) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.dir = root / "versions"
        self.failed_dir = root / "failed"
        self.pointer = root / "current"
        self.journal_path = root / "journal.json"
        for d in (self.root, self.dir, self.failed_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob("*.staging"):
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, version: int) -> Path:
        """Folder of a version (not for version 0)."""
        return self.dir / str(version)

    def current(self) -> int:
        """The version the pointer selects (0 when there is none or it is dangling)."""
        try:
            target = self.pointer.readlink()
        except OSError:
            return 0
        name = Path(target).name
        if not name.isdigit() or not (self.dir / name / CONFIG_NAME).is_file():
            return 0
        return int(name)

    def exists(self, version: int) -> bool:
        """Whether a version is kept on the site."""
        return version == 0 or (self.path(version) / CONFIG_NAME).is_file()

    def raw(self, version: int) -> dict[str, Any]:
        """The config document of a version."""
        if version == 0:
            data = load_yaml(self.bootstrap)
        else:
            try:
                data = json.loads((self.path(version) / CONFIG_NAME).read_bytes())
            except (OSError, ValueError) as exc:
                raise UpdateError(f"version {version} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise UpdateError(f"version {version} is not a config mapping")
        return data

    def staging(self, version: int) -> Path:
        """An empty staging folder for a version (removed again if it was left by a crash)."""
        stage = self.dir / f"{version}.staging"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        return stage

    def commit_stage(self, version: int, stage: Path, doc: dict[str, Any]) -> Path:
        """Write the config into ``stage``, fsync everything, and rename it to ``versions/<n>``."""
        write_atomic(stage / CONFIG_NAME, json.dumps(doc, indent=1, sort_keys=True).encode())
        for f in stage.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir():
                fsync_dir(f)
        fsync_dir(stage)
        final = self.path(version)
        if final.exists():  # an older attempt at the same version that never ran: replace it
            shutil.rmtree(final)
        os.replace(stage, final)
        fsync_dir(self.dir)
        return final

    def switch(self, version: int) -> None:
        """Point ``current`` at a version in one rename (version 0 removes the pointer)."""
        if version == 0:
            try:
                self.pointer.unlink()
            except FileNotFoundError:
                pass
            fsync_dir(self.root)
            return
        tmp = self.root / "current.tmp"
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        tmp.symlink_to(Path("versions") / str(version))
        os.replace(tmp, self.pointer)
        fsync_dir(self.root)

    def set_aside(self, version: int) -> Path | None:
        """Move a failed version to ``failed/<n>`` for the operator (replacing an older copy)."""
        src = self.path(version)
        if version == 0 or not src.exists():
            return None
        dest = self.failed_dir / str(version)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
        fsync_dir(self.dir)
        fsync_dir(self.failed_dir)
        return dest

    def prune(self, keep: set[int], max_kept: int = 5) -> None:
        """Delete old versions beyond the ``max_kept`` newest, never those in ``keep``."""
        versions = sorted(int(p.name) for p in self.dir.iterdir() if p.name.isdigit())
        for v in versions[:-max_kept]:
            if v not in keep:
                shutil.rmtree(self.path(v), ignore_errors=True)
