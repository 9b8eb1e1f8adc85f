"""One-time enrolment tokens: issued per site with a lifetime, used once, kept as hashes only.

The book is a JSON file in the centre folder (mode 0600), rewritten atomically under an exclusive
``flock`` so two enrolment services never hand out one token twice. Expiry is wall-clock time (it
is compared across processes and restarts); a token is refused when unknown, used, expired, or
presented for another site.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel.errors import ConfigError
from sync.pki import write_secret

_TTL = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``30m``, ``12h``, ``7d`` -> seconds; anything else is a :class:`ConfigError`."""
    m = _TTL.match(text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError("--ttl", [f"{text!r} is not a duration like 30m, 12h or 7d"])
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """The outcome of presenting a token: ``ok``, or the reason it is refused."""

    ok: bool
    reason: str = ""
    certificate: str = ""  # the certificate issued at the first use, for a repeated request


class TokenBook:
    """The token file: ``{"tokens": {<sha256>: {site, expires_at, used_at, key, certificate}}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {"tokens": {}}
            except ValueError as exc:
                raise ConfigError(str(self.path), [f"not a token book ({exc})"]) from None
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                write_secret(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def new(self, site_id: str, ttl_s: float, now: float | None = None) -> str:
        """Issue a token for ``site_id`` valid ``ttl_s`` seconds; only its hash is stored."""
        token = secrets.token_urlsafe(18)
        now = time.time() if now is None else now
        with self._locked() as data:
            data["tokens"][_hash(token)] = {"site": site_id, "issued_at": now, "expires_at": now + ttl_s,
                                            "used_at": None, "key": None, "certificate": None}  # fmt: skip
        return token

    def check(self, token: str, site_id: str, key_id: str, now: float | None = None) -> Verdict:
        """Whether ``token`` may enrol ``site_id`` with the TLS key ``key_id`` (without using it)."""
        now = time.time() if now is None else now
        with self._locked() as data:
            return self._verdict(data, token, site_id, key_id, now)

    @staticmethod
    def _verdict(data: dict[str, Any], token: str, site_id: str, key_id: str, now: float) -> Verdict:
        entry = data["tokens"].get(_hash(token))
        if entry is None:
            return Verdict(False, "unknown token")
        if entry["site"] != site_id:
            return Verdict(False, f"token is for another site ({entry['site']})")
        if entry["used_at"] is not None:
            if entry["key"] == key_id and entry["certificate"]:
                return Verdict(True, "repeated request", entry["certificate"])  # our answer was lost
            return Verdict(False, f"token already used at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(entry['used_at']))}")
        if now >= entry["expires_at"]:
            return Verdict(False, f"token expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(entry['expires_at']))}")
        return Verdict(True)

    def use(self, token: str, site_id: str, key_id: str, certificate: str, now: float | None = None) -> Verdict:
        """Check and mark used in one locked step; the certificate is kept for a repeated request."""
        now = time.time() if now is None else now
        with self._locked() as data:
            verdict = self._verdict(data, token, site_id, key_id, now)
            if verdict.ok and not verdict.certificate:
                data["tokens"][_hash(token)].update(used_at=now, key=key_id, certificate=certificate)
            return verdict
