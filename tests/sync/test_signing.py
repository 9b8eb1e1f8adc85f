"""Ed25519 frames, key files and the site registry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import msgspec
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
    assert generate_keypair(tmp_path) == (tmp_path / "site.key", tmp_path / "site.pub"), "the site's pair by default"
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
    assert msgspec.to_builtins(open_command(frame, keys, "site-a", kind="lighting")) == cmd.model_dump()
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


# --- key files: what a technician or operator is told ------------------------------------------


def _write_secret(path: Path, data: bytes) -> Path:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def test_private_key_problems_name_the_file_and_what_to_use(tmp_path: Path) -> None:
    _key, pub = generate_keypair(tmp_path, "s1")
    public_as_secret = _write_secret(tmp_path / "swapped.key", pub.read_bytes())
    with pytest.raises(SignatureError) as info:
        load_private_key(public_as_secret)
    assert str(info.value) == (
        f"{public_as_secret}: is a public key; the signing key must be the private one (site.key)"
    )
    garbage = _write_secret(tmp_path / "garbage.key", b"not a key at all\n")
    with pytest.raises(SignatureError) as info:
        load_private_key(garbage)
    text = str(info.value)
    assert text.startswith(f"{garbage}: not an unencrypted PEM private key (")
    # The library's reason, its first line only and cut at 120 characters.
    assert len(text) == len(f"{garbage}: not an unencrypted PEM private key ()") + 120
    assert "\n" not in text
    missing = tmp_path / "missing.key"
    with pytest.raises(SignatureError, match=f"secret file '{missing}' cannot be read"):
        load_private_key(missing)
    huge = _write_secret(tmp_path / "huge.key", b"-" * (64 * 1024 + 1))
    with pytest.raises(SignatureError, match="larger than 65536 bytes"):
        load_private_key(huge)


def test_a_private_key_with_a_comment_naming_its_public_key_loads(tmp_path: Path) -> None:
    key, _pub = generate_keypair(tmp_path, "s1")
    commented = _write_secret(tmp_path / "commented.key", b"# PUBLIC KEY: see s1.pub\n" + key.read_bytes())
    signer = Signer.from_file(commented)
    assert signer.public_key().public_bytes_raw() == Signer.from_file(key).public_key().public_bytes_raw()


def test_an_encrypted_private_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    enc = _write_secret(tmp_path / "enc.key", pem)
    with pytest.raises(SignatureError, match=f"^{enc}: not an unencrypted PEM private key"):
        load_private_key(enc)


def test_public_key_problems_name_the_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from sync.signing import load_public_key, load_public_keys

    missing = tmp_path / "missing.pub"
    with pytest.raises(SignatureError) as info:
        load_public_key(missing)
    assert str(info.value).startswith(f"cannot read an Ed25519 public key: cannot read file '{missing}'")
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"hello\n")
    with pytest.raises(SignatureError) as info:
        load_public_key(garbage)
    try:
        serialization.load_pem_public_key(b"hello\n")
    except ValueError as exc:
        why = str(exc).strip().splitlines()[0][:120]
    assert str(info.value) == f"{garbage}: not a PEM public key ({why})", "the library's reason, first line"
    _key, pub = generate_keypair(tmp_path, "ok")
    assert len(load_public_keys([pub, pub])) == 2
    with pytest.raises(SignatureError, match=r"missing\.pub"):
        load_public_keys([pub, missing])


def test_generate_makes_its_folder_refuses_either_file_and_ensure_reuses_a_pair(tmp_path: Path) -> None:
    from sync.signing import ensure_keypair, load_public_key

    out = tmp_path / "a" / "b"
    key, pub = generate_keypair(out, "one")
    assert (key, pub) == (out / "one.key", out / "one.pub")
    assert generate_keypair(out, "two") == (out / "two.key", out / "two.pub"), "a second pair beside the first"
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert Signer.from_file(key).public_key().public_bytes_raw() == load_public_key(pub).public_bytes_raw()
    (out / "three.pub").write_text("left over")
    with pytest.raises(SignatureError) as info:
        generate_keypair(out, "three")
    assert str(info.value) == f"{out / 'three.pub'} exists; refusing to overwrite a key"
    assert not (out / "three.key").exists()
    before = key.read_bytes()
    assert ensure_keypair(out, "one") == (key, pub)
    assert key.read_bytes() == before
    assert ensure_keypair(out, "four") == (out / "four.key", out / "four.pub")
    pub.unlink()
    with pytest.raises(SignatureError, match="refusing to overwrite"):
        ensure_keypair(out, "one")


def test_cli_keys_generate_says_which_file_stays_and_which_is_registered(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sync.keys_cli import keys_cli

    out = tmp_path / "k"
    result = CliRunner().invoke(keys_cli, ["generate", "--out", str(out), "--name", "bn-01"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"private key: {out / 'bn-01.key'} (mode 0600; keep it on the device)",
        f"public key:  {out / 'bn-01.pub'} (register it with the centre)",
    ]
    assert (out / "bn-01.key").stat().st_mode & 0o777 == 0o600


# --- frames -------------------------------------------------------------------------------------


def test_frames_carry_their_id_and_a_frame_without_one_opens(tmp_path: Path) -> None:
    from sync.signing import open_down, sign_command, verify_frame
    from sync.wire import Ack, Command

    centre = Signer.from_file(generate_keypair(tmp_path, "centre")[0])
    keys = [centre.public_key()]
    payload = wire.compress(b"{}")
    assert wire.unpack_frame(centre.frame(payload, "b-1")).msg_id == "b-1"
    assert wire.unpack_frame(centre.frame(payload)).msg_id == ""
    ack = Ack(site_id="site-a", batch_id="b-1", first_seq=1, last_seq=2, batch_sha256="a" * 64, stored=2,
              duplicates=0)
    small = wire.unpack_frame(centre.small_frame(ack, "b-1"))
    assert (small.msg_id, small.codec, small.payload) == ("b-1", wire.CODEC_JSON, wire.encode_small(ack))
    verify_frame(small, keys)
    assert msgspec.to_builtins(open_down(centre.small_frame(ack), keys)) == ack.model_dump()
    assert msgspec.to_builtins(open_down(centre.small_frame(ack, "b-1"), keys)) == ack.model_dump()
    with pytest.raises(wire.WireError) as info:
        open_down(centre.small_frame(ack, "b-2"), keys)
    assert str(info.value) == "frame id 'b-2' differs from the signed batch id 'b-1'"
    cmd = Command(command_id="c-1", target="site-a", kind="lighting", issued_at=1.0, expires_at=2.0)
    assert wire.unpack_frame(sign_command(cmd, centre)).msg_id == "c-1"


def test_any_registered_key_verifies_and_the_errors_say_which_check_failed(tmp_path: Path) -> None:
    from sync.signing import verify_frame

    old = Signer.from_file(generate_keypair(tmp_path / "old", "centre")[0])
    new = Signer.from_file(generate_keypair(tmp_path / "new", "centre")[0])
    payload = wire.compress(b'{"x":1}')
    # Two keys while one rotates: a frame signed by either verifies, in any order.
    for keys in ([old.public_key(), new.public_key()], [new.public_key(), old.public_key()]):
        verify_frame(wire.unpack_frame(new.frame(payload)), keys)
        verify_frame(wire.unpack_frame(old.frame(payload)), keys)
    with pytest.raises(SignatureError) as info:
        verify_frame(wire.unpack_frame(new.frame(payload)), [old.public_key()])
    assert str(info.value) == "signature does not verify against any registered key"
    with pytest.raises(SignatureError) as info:
        verify_frame(wire.unpack_frame(wire.pack_frame(payload)), [old.public_key()])
    assert str(info.value) == "frame is unsigned"


def test_a_command_reply_is_verified_against_the_site_and_must_be_a_reply(tmp_path: Path) -> None:
    from sync.signing import open_reply
    from sync.wire import CommandReply

    site = Signer.from_file(generate_keypair(tmp_path, "site-a")[0])
    reply = CommandReply(site_id="site-a", command_id="c-1", outcome="refused", reason="no", ts=5.0)
    assert open_reply(site.small_frame(reply, "c-1"), [site.public_key()]) == reply
    not_reply = site.small_frame(CommandReply(site_id="site-a", command_id="c", outcome="accepted", ts=1.0))
    bad = b'{"type": "cmd-reply"}'
    with pytest.raises(wire.WireError) as info:
        open_reply(wire.pack_frame(bad, site.sign(bad), codec=wire.CODEC_JSON), [site.public_key()])
    assert str(info.value) == "not a command reply: Field required"
    one_wrong = b'{"type": "cmd-reply", "site_id": "site-a", "command_id": "c", "outcome": "maybe", "ts": 1}'
    with pytest.raises(wire.WireError) as info:
        open_reply(wire.pack_frame(one_wrong, site.sign(one_wrong), codec=wire.CODEC_JSON), [site.public_key()])
    assert str(info.value) == "not a command reply: Input should be 'accepted', 'refused' or 'failed'"
    assert open_reply(not_reply, [site.public_key()]).outcome == "accepted"


def test_refused_commands_tell_the_centre_why(tmp_path: Path) -> None:
    from sync.signing import CommandRefused, open_command, sign_command
    from sync.wire import Command

    centre = Signer.from_file(generate_keypair(tmp_path, "centre")[0])
    cmd = Command(command_id="c-7", target="site-a", kind="lighting", issued_at=1.0, expires_at=2.0)
    frame = sign_command(cmd, centre)
    with pytest.raises(CommandRefused) as info:
        open_command(frame, [centre.public_key()], "site-b")
    assert str(info.value) == "command c-7 is for site 'site-a', not 'site-b'"
    with pytest.raises(CommandRefused) as info:
        open_command(frame, [centre.public_key()], "site-a", kind="signal-plan")
    assert str(info.value) == "command c-7 is a 'lighting' command on the 'signal-plan' topic"
    with pytest.raises(wire.WireError) as werr:
        open_command(centre.frame(wire.encode_command_payload(cmd), "c-8"), [centre.public_key()], "site-a")
    assert str(werr.value) == "frame id 'c-8' differs from the signed command id 'c-7'"


# --- the centre's registry follows its file -----------------------------------------------------


def _registry_file(tmp_path: Path, *sites: str, groups: dict[str, list[str]] | None = None) -> Path:
    import yaml

    doc: dict[str, dict[str, dict[str, object]]] = {"sites": {}}
    for s in sites:
        if not (tmp_path / f"{s}.pub").exists():
            generate_keypair(tmp_path, s)
        doc["sites"][s] = {"public_keys": [f"{s}.pub"], "groups": (groups or {}).get(s, [])}
    f = tmp_path / "sites.yaml"
    tmp = tmp_path / "sites.tmp"
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(f)  # a new inode: the enrolment service writes it this way
    return f


def test_registry_groups_and_membership(tmp_path: Path) -> None:
    f = _registry_file(tmp_path, "bn-02", "bn-01", "bg-01", groups={"bn-01": ["canary", "bn"], "bn-02": ["bn"]})
    reg = SiteRegistry.load(f)
    assert reg.path == f
    assert reg.sites() == ["bg-01", "bn-01", "bn-02"]
    assert reg.sites("bn") == ["bn-01", "bn-02"]
    assert reg.sites("canary") == ["bn-01"]
    assert reg.sites("nobody") == []
    assert len(reg) == 3
    assert "bn-01" in reg
    assert "bn-09" not in reg
    assert (reg.reloads, reg.reload_errors, reg.last_error) == (0, 0, "")


def test_registry_in_memory_never_reloads() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    reg = SiteRegistry({"s1": [key]}, check_every_s=0.0)
    assert reg.path is None
    assert reg.refresh() is False
    reg.request_reload()
    assert reg.keys_for("s1") == [key]
    assert reg.keys_for("s2") is None
    assert reg.sites() == ["s1"]
    assert reg.sites("g") == []
    assert reg.reloads == 0


def test_registry_reloads_a_changed_file_at_most_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="kbe.registry")
    f = _registry_file(tmp_path, "bn-01")
    reg = SiteRegistry.load(f, check_every_s=0.4)
    assert reg.refresh() is False, "unchanged: nothing to do"
    assert reg.reloads == 0
    _registry_file(tmp_path, "bn-01", "bn-02", groups={"bn-02": ["canary"]})
    assert "bn-02" not in reg
    assert reg.keys_for("bn-01") is not None
    assert reg.sites() == ["bn-01"], "not before the check interval"
    time.sleep(0.45)
    assert reg.sites("canary") == ["bn-02"]
    assert reg.reloads == 1
    assert f"site registry {f} reloaded: 2 sites (new: bn-02)" in caplog.messages, "the operator sees who enrolled"
    assert reg.refresh() is False
    assert reg.reloads == 1
    # A forced reload reads the file even when it did not change, and says it did.
    reg.request_reload()
    assert reg.refresh() is True
    assert reg.reloads == 2
    assert reg.refresh() is False, "a request is used up by one reload"


def test_registry_check_interval_defaults_to_a_second(tmp_path: Path) -> None:
    from sync.signing import load_public_key

    f = _registry_file(tmp_path, "bn-01")
    loaded = SiteRegistry.load(f)
    made = SiteRegistry({"bn-01": [load_public_key(tmp_path / "bn-01.pub")]}, f)
    assert made.refresh() is False, "made from a file, it knows the file's state"
    _registry_file(tmp_path, "bn-01", "bn-02")
    time.sleep(0.6)
    assert loaded.sites() == ["bn-01"]
    assert made.sites() == ["bn-01"]
    time.sleep(0.5)
    assert loaded.sites() == ["bn-01", "bn-02"]
    assert made.sites() == ["bn-01", "bn-02"]


def test_an_unknown_site_makes_the_registry_look_at_once_but_a_known_one_does_not(tmp_path: Path) -> None:
    f = _registry_file(tmp_path, "bn-01")
    reg = SiteRegistry.load(f, check_every_s=3600)
    first = reg.keys_for("bn-01")
    assert first is not None
    _registry_file(tmp_path, "bn-01", "bn-02")
    assert reg.keys_for("bn-01") is first, "a known site does not read the file"
    assert reg.reloads == 0
    keys = reg.keys_for("bn-02")
    assert keys is not None
    assert len(keys) == 1
    assert reg.reloads == 1
    assert reg.keys_for("bn-09") is None
    assert reg.reloads == 1, "an unknown site with the file unchanged does not reload it"


def test_a_sighup_reloads_at_the_next_lookup(tmp_path: Path) -> None:
    f = _registry_file(tmp_path, "bn-01")
    reg = SiteRegistry.load(f, check_every_s=3600)
    old = reg.keys_for("bn-01")
    # The key file replaced, the registry file untouched: only a request notices.
    (tmp_path / "bn-01.pub").unlink()
    (tmp_path / "bn-01.key").unlink()
    generate_keypair(tmp_path, "bn-01")
    assert reg.keys_for("bn-01") is old
    reg.request_reload()
    new = reg.keys_for("bn-01")
    assert new is not None
    assert new is not old
    assert reg.reloads == 1
    assert reg.keys_for("bn-01") is new


def test_a_broken_registry_keeps_the_previous_one_until_it_changes_again(tmp_path: Path) -> None:
    f = _registry_file(tmp_path, "bn-01")
    reg = SiteRegistry.load(f, check_every_s=3600)
    old = reg.keys_for("bn-01")
    f.write_text(
        "sites:\n"
        + "".join(f"  bn-{i}:\n    public_keys: [missing-{i}.pub]\n" for i in range(1, 5))
    )
    reg.request_reload()
    assert reg.refresh() is False
    assert reg.keys_for("bn-01") is old, "a half-edited file never drops the sites"
    assert reg.reload_errors == 1
    assert reg.reloads == 0
    problems = reg.last_error.split("; ")
    assert len(problems) == 3
    for i, problem in enumerate(problems, 1):
        assert problem.startswith(f"sites.bn-{i}.public_keys[0]: cannot read an Ed25519 public key")
    assert "missing-3.pub" in problems[2]
    assert reg.keys_for("bn-2") is None
    assert reg.reload_errors == 1, "the same broken file is not read again"
    f.unlink()
    assert reg.keys_for("bn-3") is None
    assert reg.reload_errors == 2, "a deleted file is a change, and keeps the previous registry too"
    assert "bn-01" in reg
    _registry_file(tmp_path, "bn-01", "bn-05")
    assert reg.keys_for("bn-05") is not None
    assert reg.reloads == 1


def test_registry_key_paths_are_relative_to_the_file_or_absolute(tmp_path: Path) -> None:
    _key, pub = generate_keypair(tmp_path / "keys", "bn-01")
    f = tmp_path / "reg" / "sites.yaml"
    f.parent.mkdir()
    f.write_text(f"sites:\n  bn-01:\n    public_keys: [{pub}]\n  bn-02:\n    public_keys: [../keys/bn-01.pub]\n")
    reg = SiteRegistry.load(f)
    assert reg.sites() == ["bn-01", "bn-02"]


def test_registry_problems_are_all_listed_with_the_file(tmp_path: Path) -> None:
    _key, pub = generate_keypair(tmp_path, "ok")
    f = tmp_path / "sites.yaml"
    f.write_text(
        f"sites:\n  Bad/1:\n    public_keys: [{pub.name}]\n  BAD-2:\n    public_keys: [{pub.name}]\n"
        f"  bn-03:\n    public_keys: [{pub.name}, missing.pub]\n"
    )
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert info.value.source == str(f)
    assert info.value.problems[:2] == [
        "sites.Bad/1: 'Bad/1' is not a valid site id",
        "sites.BAD-2: 'BAD-2' is not a valid site id",
    ]
    assert info.value.problems[2].startswith("sites.bn-03.public_keys[1]: cannot read an Ed25519 public key")
    assert len(info.value.problems) == 3
    f.write_text("sites: [not, a, mapping]\n")
    with pytest.raises(ConfigError) as info:
        SiteRegistry.load(f)
    assert info.value.source == str(f)


# --- the retained status: signed by the site, opened by the centre ------------------------------


def test_a_status_is_signed_for_its_site_and_opened_only_on_that_sites_topic(tmp_path: Path) -> None:
    """The status (and the last will) is plain JSON signed by the site, its site id in the header; the
    centre keeps it only when a key of the topic's site verifies it and both ids name that site."""
    from sync.signing import open_status, sign_status

    site = Signer.from_file(generate_keypair(tmp_path, "site-a")[0])
    keys = [site.public_key()]
    status = wire.Status(site_id="site-a", state="online", ts=5.0)
    frame = wire.unpack_frame(sign_status(status, site))
    assert (frame.msg_id, frame.codec, frame.payload) == ("site-a", wire.CODEC_JSON, wire.encode_small(status))
    assert open_status(sign_status(status, site), keys, "site-a") == status
    assert open_status(site.small_frame(status), keys, "site-a") == status, "a frame without an id opens"
    with pytest.raises(SignatureError) as info:
        open_status(status.model_dump_json().encode(), keys, "site-a")
    assert str(info.value) == "status is unsigned (plain JSON)"
    rogue = Signer.from_file(generate_keypair(tmp_path / "r", "site-a")[0])
    with pytest.raises(SignatureError, match="does not verify"):
        open_status(sign_status(status, rogue), keys, "site-a")
    other = wire.Status(site_id="site-b", state="offline")
    for data in (sign_status(other, site), site.small_frame(other, "site-a"), site.small_frame(status, "site-b")):
        with pytest.raises(wire.WireError) as werr:
            open_status(data, keys, "site-a")
        assert "on the topic of 'site-a'" in str(werr.value)
    with pytest.raises(wire.WireError) as werr:
        open_status(sign_status(other, site), keys, "site-a")
    assert str(werr.value) == "status signed for site 'site-b' on the topic of 'site-a'"


# --- the two kinds of key: the interpreter's OpenSSL, and cryptography ---------------------------


def test_pem_key_files_load_on_the_interpreters_openssl_not_through_cryptography(tmp_path: Path) -> None:
    """The agent's process signs and verifies with :mod:`sync.ed25519`: the usual PEM key files load
    as its keys, so ``cryptography`` is not needed to start a site."""
    from sync import ed25519
    from sync.signing import load_public_key

    if not ed25519.available():
        pytest.skip("no libcrypto of OpenSSL 3 loaded in this interpreter")
    key, pub = generate_keypair(tmp_path, "s1")
    assert type(load_private_key(key)) is ed25519.PrivateKey
    assert type(load_public_key(pub)) is ed25519.PublicKey


def test_cryptography_keys_verify_and_refuse_like_the_light_ones(tmp_path: Path) -> None:
    """A key object of ``cryptography`` (another PEM form, a caller's own key) verifies a good
    signature and refuses a tampered frame or another signer's, like the interpreter's OpenSSL keys."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from sync.signing import verifies, verify_frame

    signer = Signer(Ed25519PrivateKey.generate())
    other = Signer(Ed25519PrivateKey.generate())
    key = signer.public_key()
    assert isinstance(key, Ed25519PublicKey)
    payload = wire.compress(b'{"x":1}')
    sig = signer.sign(payload)
    assert verifies(key, sig, payload) is True
    assert verifies(key, sig, payload + b"!") is False
    assert verifies(key, other.sign(payload), payload) is False
    verify_frame(wire.unpack_frame(signer.frame(payload)), [other.public_key(), key])
    with pytest.raises(SignatureError, match="does not verify"):
        verify_frame(wire.unpack_frame(other.frame(payload)), [key])
