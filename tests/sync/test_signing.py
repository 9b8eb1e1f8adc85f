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


def test_command_frame_id_must_be_the_signed_command_id(tmp_path: Path) -> None:
    """The topic-level id in the frame header cannot relabel a signed command (the reply and the
    replay guard use it)."""
    from sync.signing import open_command
    from sync.wire import Command, WireError

    centre = Signer.from_file(generate_keypair(tmp_path, "centre")[0])
    cmd = Command(command_id="c-8", target="site-a", kind="lighting", issued_at=1000.0, expires_at=1060.0)
    payload = wire.encode_command_payload(cmd)
    relabelled = wire.pack_frame(payload, centre.sign(payload), msg_id="c-9")
    with pytest.raises(WireError, match="differs"):
        open_command(relabelled, [centre.public_key()], "site-a")
    same = wire.pack_frame(payload, centre.sign(payload), msg_id="c-8")
    assert open_command(same, [centre.public_key()], "site-a").command_id == "c-8"


@pytest.mark.parametrize("site", ["bad/site", "site-#", "+", "a+b", "Site-A", ""])
def test_registry_refuses_site_ids_that_are_not_topic_segments(tmp_path: Path, site: str) -> None:
    """A site id becomes an MQTT topic segment: wildcards, slashes and capitals are refused."""
    _key, pub = generate_keypair(tmp_path, "s1")
    f = tmp_path / "sites.yaml"
    f.write_text(f'sites:\n  "{site}":\n    public_keys: [{pub.name}]\n  good-site:\n    public_keys: [{pub.name}]\n')
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert any("not a valid site id" in p for p in info.value.problems)
    f.write_text(f"sites:\n  good-site:\n    public_keys: [{pub.name}]\n")
    assert "good-site" in SiteRegistry.load(f)


def test_only_ed25519_keys_are_accepted(tmp_path: Path) -> None:
    """An EC (or RSA) key in place of an Ed25519 one is refused, public or private."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sync.signing import load_public_key

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        load_public_key(pub)
    priv = tmp_path / "ec.key"
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            ec_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with pytest.raises(SignatureError, match="not an Ed25519 key"):
        load_private_key(priv)
    f = tmp_path / "sites.yaml"
    f.write_text("sites:\n  s1:\n    public_keys: [ec.pub]\n")
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert "not an Ed25519 public key" in info.value.problems[0]
