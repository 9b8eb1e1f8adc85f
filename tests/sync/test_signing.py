"""Ed25519 frames, key files and the site registry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kernel.errors import ConfigError, SignatureError
from sync import wire
from sync.signing import Signer, SiteRegistry, generate_keypair, load_private_key, open_signed
from tests.conftest import agent_argv, agent_env


def test_generate_writes_0600_key_and_signs(tmp_path: Path) -> None:
    key, _pub = generate_keypair(tmp_path, "s1")
    assert key.stat().st_mode & 0o777 == 0o600
    signer = Signer.from_file(key)
    reg_file = tmp_path / "sites.yaml"
    reg_file.write_text("sites:\n  s1:\n    public_keys: [s1.pub]\n")
    reg = SiteRegistry.load(reg_file)
    keys = reg.keys_for("s1")
    assert keys is not None
    assert reg.keys_for("nope") is None
    payload = wire.compress(b'{"x":1}')
    frame = open_signed(signer.frame(payload), keys)
    assert frame.payload == payload


def test_tampered_and_unsigned_frames_fail(tmp_path: Path) -> None:
    key, _ = generate_keypair(tmp_path)
    signer = Signer.from_file(key)
    keys = [signer.public_key()]
    data = bytearray(signer.frame(wire.compress(b'{"x":1}')))
    data[-3] ^= 0x01
    with pytest.raises(SignatureError, match="does not verify"):
        open_signed(bytes(data), keys)
    with pytest.raises(SignatureError, match="unsigned"):
        open_signed(wire.pack_frame(wire.compress(b"{}")), keys)
    other = Signer.from_file(generate_keypair(tmp_path / "o")[0])
    with pytest.raises(SignatureError):
        open_signed(other.frame(wire.compress(b"{}")), keys)


def test_loose_key_mode_is_refused(tmp_path: Path) -> None:
    key, _ = generate_keypair(tmp_path)
    key.chmod(0o644)
    with pytest.raises(SignatureError, match="0644"):
        load_private_key(key)


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    generate_keypair(tmp_path)
    with pytest.raises(SignatureError, match="refusing"):
        generate_keypair(tmp_path)


def test_registry_problems_name_the_path(tmp_path: Path) -> None:
    f = tmp_path / "sites.yaml"
    f.write_text("sites:\n  s1:\n    public_keys: [missing.pub]\n  s2: {}\n")
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert any(p.startswith("sites.s2.public_keys") for p in info.value.problems)
    f.write_text("sites:\n  s1:\n    public_keys: [missing.pub]\n")
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert info.value.problems[0].startswith("sites.s1.public_keys[0]:")


def test_cli_keys_generate(tmp_path: Path) -> None:
    out = subprocess.run(agent_argv("keys", "generate", "--out", str(tmp_path / "k")), env=agent_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "k" / "site.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "site.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_commands_are_verified_and_targeted_and_time_is_left_to_the_router(tmp_path: Path) -> None:
    from sync.signing import CommandRefused, open_command, sign_command
    from sync.wire import Command

    centre = Signer.from_file(generate_keypair(tmp_path, "centre")[0])
    keys = [centre.public_key()]
    cmd = Command(command_id="c-7", target="site-a", kind="lighting", issued_at=1000.0, expires_at=1060.0,
                  body={"override": "on", "dim": 80})
    frame = sign_command(cmd, centre)
    assert open_command(frame, keys, "site-a", kind="lighting") == cmd
    # Expired by any wall clock: still opened; expiry is the router's (one) policy.
    assert open_command(frame, keys, "site-a").expires_at == 1060.0
    with pytest.raises(CommandRefused, match="not 'site-b'"):
        open_command(frame, keys, "site-b")
    with pytest.raises(CommandRefused, match="topic"):
        open_command(frame, keys, "site-a", kind="signal-plan")
    forged = Signer.from_file(generate_keypair(tmp_path / "f", "x")[0])
    with pytest.raises(SignatureError):
        open_command(sign_command(cmd, forged), keys, "site-a")
    with pytest.raises(SignatureError, match="unsigned"):
        open_command(wire.pack_frame(wire.encode_command_payload(cmd), msg_id="c-7"), keys, "site-a")
