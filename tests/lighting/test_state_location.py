"""Where the lighting state lives: the configured ``state_path``, else beside the store (the agent's
state directory: the systemd unit lets the agent write only there), and a site that kept it at the
old default (``var/lighting-state.json`` beside its config file) keeps using that file."""

from __future__ import annotations

from pathlib import Path

from control.lighting.config import LEGACY_STATE, LightingConfig
from control.lighting.state import state_file
from tests.lighting.conftest import lighting_dict


def _config(base: Path, **extra: object) -> LightingConfig:
    return LightingConfig.model_validate(lighting_dict(**extra), context={"base_dir": base})


def test_unset_means_beside_the_store(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert cfg.state_path is None
    assert state_file(cfg.state_path, Path("/var/lib/kinhbac-edge/store.db")) == Path(
        "/var/lib/kinhbac-edge/lighting-state.json"
    )
    assert state_file(None, None) is None  # nowhere to keep it: not persisted


def test_a_configured_path_wins_and_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = _config(tmp_path, state_path="state/l.json")
    assert cfg.state_path == tmp_path / "state/l.json"
    assert state_file(cfg.state_path, Path("/var/lib/kinhbac-edge/store.db")) == tmp_path / "state/l.json"


def test_a_site_with_the_old_default_file_keeps_it(tmp_path: Path) -> None:
    (tmp_path / LEGACY_STATE).parent.mkdir(parents=True)
    (tmp_path / LEGACY_STATE).write_text('{"version": 1, "overrides": {}, "profiles": {}}')
    cfg = _config(tmp_path)
    assert cfg.state_path == tmp_path / LEGACY_STATE
    assert state_file(cfg.state_path, Path("/var/lib/kinhbac-edge/store.db")) == tmp_path / LEGACY_STATE
