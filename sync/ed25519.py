"""Ed25519 keys on the OpenSSL the interpreter has already loaded, so the agent carries one OpenSSL.

``cryptography`` ships its own OpenSSL and Rust core: about 10 MB resident in a process that only
signs batches and checks acks. Python's ``ssl`` and ``hashlib`` map the system ``libcrypto``
anyway, and its EVP interface signs and verifies Ed25519 (RFC 8032; OpenSSL 1.1.1 or later), so
this module calls it through ``ctypes``. Only the canonical PEM forms are parsed here (unencrypted
PKCS#8 v1 private keys, SubjectPublicKeyInfo public keys, as ``cryptography`` and ``openssl
genpkey`` write them); anything else, and every operation beyond sign, verify and PEM export, is
left to ``cryptography``, imported then. Where no usable ``libcrypto`` is found, :func:`available`
is False and callers keep ``cryptography`` keys.
"""

from __future__ import annotations

import base64
import ctypes
import threading
from typing import TYPE_CHECKING, Any, TypeAlias

from kernel.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# DER prefixes of the two canonical encodings; the 32 key bytes follow.
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_NID_ED25519 = 1087
_OPENSSL_MIN = 0x10101000  # 1.1.1: raw Ed25519 keys and one-shot EVP_DigestSign

AnyPublicKey: TypeAlias = "PublicKey | Ed25519PublicKey"
AnyPrivateKey: TypeAlias = "PrivateKey | Ed25519PrivateKey"


class BadSignature(SignatureError):
    """The signature does not verify against this key."""


def _loaded_libcrypto() -> str | None:
    """Path of the libcrypto this process already mapped for ``ssl``/``hashlib`` (Linux)."""
    try:
        import _hashlib  # noqa: F401  - maps libcrypto when hashlib is OpenSSL-backed
    except ImportError:
        return None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").partition("/")[2]
                if path and "/libcrypto.so" in "/" + path:
                    return "/" + path
    except OSError:
        pass
    return None


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, sz, cs, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int
    for name, res, args in (
        ("OpenSSL_version_num", ctypes.c_ulong, []),
        ("EVP_PKEY_new_raw_private_key", p, [i, p, cs, sz]),
        ("EVP_PKEY_new_raw_public_key", p, [i, p, cs, sz]),
        ("EVP_PKEY_get_raw_public_key", i, [p, cs, ctypes.POINTER(sz)]),
        ("EVP_PKEY_free", None, [p]),
        ("EVP_MD_CTX_new", p, []),
        ("EVP_MD_CTX_free", None, [p]),
        ("EVP_DigestSignInit", i, [p, p, p, p, p]),
        ("EVP_DigestSign", i, [p, cs, ctypes.POINTER(sz), cs, sz]),
        ("EVP_DigestVerifyInit", i, [p, p, p, p, p]),
        ("EVP_DigestVerify", i, [p, cs, sz, cs, sz]),
        ("ERR_clear_error", None, []),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_probed = False


def backend() -> ctypes.CDLL | None:
    """The bound libcrypto, or None when there is none usable (then ``cryptography`` is used)."""
    global _lib, _probed
    with _lock:
        if not _probed:
            _probed = True
            for name in (_loaded_libcrypto(), "libcrypto.so.3"):
                if not name:
                    continue
                try:
                    lib = _bind(ctypes.CDLL(name))
                except (OSError, AttributeError):
                    continue
                if lib.OpenSSL_version_num() >= _OPENSSL_MIN:
                    _lib = lib
                    break
        return _lib


def available() -> bool:
    """Whether keys can be handled here without ``cryptography``."""
    return backend() is not None


def _der(pem: bytes, label: bytes) -> bytes | None:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    text = pem.strip()
    if not (text.startswith(begin) and text.endswith(end)):
        return None
    try:
        return base64.b64decode(b"".join(text[len(begin) : -len(end)].split()), validate=True)
    except ValueError:
        return None


def private_from_pem(pem: bytes) -> PrivateKey | None:
    """The key of a canonical Ed25519 PKCS#8 PEM, or None (another form, or no libcrypto here)."""
    der = _der(pem, b"PRIVATE KEY")
    if der is None or len(der) != 48 or not der.startswith(_PKCS8_PREFIX) or not available():
        return None
    return PrivateKey(der[16:])


def public_from_pem(pem: bytes) -> PublicKey | None:
    """The key of a canonical Ed25519 SubjectPublicKeyInfo PEM, or None (another form, or no libcrypto)."""
    der = _der(pem, b"PUBLIC KEY")
    if der is None or len(der) != 44 or not der.startswith(_SPKI_PREFIX) or not available():
        return None
    return PublicKey(der[12:])


class _EvpKey:
    """An ``EVP_PKEY`` owned by this object."""

    _pkey: int | None = None

    def __init__(self, constructor: str, raw: bytes) -> None:
        lib = backend()
        if lib is None:
            raise SignatureError("no libcrypto with Ed25519 in this process")
        self._lib = lib
        pkey = getattr(lib, constructor)(_NID_ED25519, None, raw, len(raw))
        if not pkey:
            lib.ERR_clear_error()
            raise SignatureError("libcrypto refused the Ed25519 key")
        self._pkey = pkey

    def __del__(self) -> None:
        if self._pkey:
            self._lib.EVP_PKEY_free(self._pkey)
            self._pkey = None


class PublicKey(_EvpKey):
    """An Ed25519 public key: verifies signatures; equal to any key with the same 32 bytes."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise SignatureError("an Ed25519 public key is 32 bytes")
        self.raw = bytes(raw)
        super().__init__("EVP_PKEY_new_raw_public_key", self.raw)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``data``."""
        lib = self._lib
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            ok = (
                lib.EVP_DigestVerifyInit(ctx, None, None, None, self._pkey) == 1
                and lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) == 1
            )
        finally:
            lib.EVP_MD_CTX_free(ctx)
        if not ok:
            lib.ERR_clear_error()
        return bool(ok)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`BadSignature` unless the signature verifies (as ``cryptography`` keys do)."""
        if not self.verifies(signature, data):
            raise BadSignature("signature does not verify")

    def public_bytes_raw(self) -> bytes:
        """The 32 raw key bytes."""
        return self.raw

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, as ``cryptography`` writes it."""
        b64 = base64.b64encode(_SPKI_PREFIX + self.raw)
        return b"-----BEGIN PUBLIC KEY-----\n" + b64 + b"\n-----END PUBLIC KEY-----\n"

    def to_cryptography(self) -> Ed25519PublicKey:
        """The same key as a ``cryptography`` object (imports it)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.raw)

    def public_bytes(self, encoding: Any, format: Any) -> bytes:
        """Any encoding ``cryptography`` offers (delegated to it)."""
        return self.to_cryptography().public_bytes(encoding, format)

    def __eq__(self, other: object) -> bool:
        raw = getattr(other, "public_bytes_raw", None)
        return callable(raw) and raw() == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()[:16]}...)"


class PrivateKey(_EvpKey):
    """An Ed25519 private key: signs; its 32-byte seed stays inside libcrypto."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise SignatureError("an Ed25519 private key is 32 bytes")
        super().__init__("EVP_PKEY_new_raw_private_key", seed)
        buf, n = ctypes.create_string_buffer(32), ctypes.c_size_t(32)
        if self._lib.EVP_PKEY_get_raw_public_key(self._pkey, buf, ctypes.byref(n)) != 1:
            self._lib.ERR_clear_error()
            raise SignatureError("libcrypto cannot derive the Ed25519 public key")
        self._public = PublicKey(buf.raw[: n.value])

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        lib = self._lib
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new")
        sig, n = ctypes.create_string_buffer(64), ctypes.c_size_t(64)
        try:
            if (
                lib.EVP_DigestSignInit(ctx, None, None, None, self._pkey) != 1
                or lib.EVP_DigestSign(ctx, sig, ctypes.byref(n), data, len(data)) != 1
            ):
                lib.ERR_clear_error()
                raise SignatureError("libcrypto failed to sign")
        finally:
            lib.EVP_MD_CTX_free(ctx)
        return sig.raw[: n.value]

    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._public

    def __repr__(self) -> str:
        return "PrivateKey(...)"
