"""Ed25519 on the interpreter's libcrypto: interchangeable with ``cryptography``, and no leak."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import ed25519, pki
from sync.signing import Signer, generate_keypair, load_private_key, load_public_key, public_pem, verifies

pytestmark = pytest.mark.skipif(not ed25519.available(), reason="no libcrypto with Ed25519 in this interpreter")


def test_loaded_keys_are_the_light_ones_and_sign_like_cryptography(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path, "site")
    light = load_private_key(key_path)
    light_pub = load_public_key(pub_path)
    assert isinstance(light, ed25519.PrivateKey)
    assert isinstance(light_pub, ed25519.PublicKey)
    ref = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(ref, Ed25519PrivateKey)
    msg = os.urandom(3000)
    assert light.sign(msg) == ref.sign(msg)  # Ed25519 is deterministic: same key, same signature
    ref.public_key().verify(light.sign(msg), msg)
    assert light_pub.verifies(ref.sign(msg), msg)
    assert not light_pub.verifies(ref.sign(msg), msg + b"!")
    assert not light_pub.verifies(b"\x00" * 10, msg)
    with pytest.raises(ed25519.BadSignature):
        light_pub.verify(light.sign(b"a"), b"b")
    assert light.public_key() == light_pub == ref.public_key()
    assert ref.public_key() == light_pub  # the reflected comparison, as in a list of mixed keys
    assert public_pem(light_pub) == pub_path.read_bytes() == public_pem(ref.public_key())
    assert pki.fingerprint(light_pub) == pki.fingerprint(ref.public_key())


def test_mixed_keys_verify_frames_either_way(tmp_path: Path) -> None:
    key_path, _ = generate_keypair(tmp_path, "centre")
    light = Signer.from_file(key_path)
    ref = Signer(Ed25519PrivateKey.from_private_bytes(os.urandom(32)))
    sig = light.sign(b"payload")
    assert verifies(ref.public_key(), ref.sign(b"payload"), b"payload")
    assert verifies(light.public_key(), sig, b"payload")
    assert not verifies(ref.public_key(), sig, b"payload")


def test_other_pem_forms_fall_back_to_cryptography(tmp_path: Path) -> None:
    # A PKCS#8 v2 key (with its public half) is not the canonical form parsed here.
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    assert ed25519.private_from_pem(pem) is None
    assert ed25519.public_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") is None
    assert ed25519.private_from_pem(b"garbage") is None


def test_no_growth_over_many_signatures_and_keys() -> None:
    def rss_kb() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    key = ed25519.PrivateKey(os.urandom(32))
    sig = key.sign(b"x")
    for _ in range(2000):  # warm up allocator pools
        key.sign(b"x")
    before = rss_kb()
    for _ in range(20000):
        key.sign(b"x" * 100)
        key.public_key().verifies(sig, b"y")  # a failed verify leaves nothing on OpenSSL's error queue
        ed25519.PrivateKey(os.urandom(32))
    assert rss_kb() - before < 2048
