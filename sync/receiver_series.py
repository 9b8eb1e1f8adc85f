"""The centre's series key: one 64-bit integer per (site, device, point), indexed instead of the texts.

``series`` is the first 4 bytes of SHA-256(site_id NUL device) followed by the first 4 bytes of
SHA-256(site_id NUL device NUL point) (UTF-8), read as a signed big-endian integer. The device's
half comes first so that a device's points sit side by side in the index: a poll's readings then
land on a few index pages instead of one random page each (a key of 8 random bytes cost PostgreSQL
1.7 to 2 times as much CPU per row: docs/benchmarks.md). The same function exists in the database
(``kbe_series``), so that a consumer can find a point's readings without Python::

    WHERE series = kbe_series('bn-01', 'meter-1', 'v') AND site_id = 'bn-01' AND device = 'meter-1'
      AND point = 'v' AND ts >= ...

The three equalities beside the series make a hash collision harmless: two points that share a
series only share index entries, never answers. The wire refuses NUL in names, so the separator
cannot be forged.
"""

from __future__ import annotations

import hashlib
import sqlite3


def pg_series_sql(site_id: str, device: str, point: str) -> str:
    """The key as a PostgreSQL expression over three text expressions (the body of ``kbe_series``)."""
    dev = rf"convert_to({site_id}, 'UTF8') || E'\\x00'::bytea || convert_to({device}, 'UTF8')"
    return (
        rf"('x' || encode(substr(sha256({dev}), 1, 4) || substr(sha256({dev} || E'\\x00'::bytea"
        rf" || convert_to({point}, 'UTF8')), 1, 4), 'hex'))::bit(64)::bigint"
    )


# PostgreSQL 11+ (sha256). convert_to is STABLE (it reads the database's encoding, which never
# changes), so the body is not inlined: the planner calls the function once for constant arguments.
PG_FUNCTION = (
    "CREATE FUNCTION kbe_series(site_id text, device text, point text) RETURNS bigint "
    f"LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT {pg_series_sql('site_id', 'device', 'point')} $$"
)


def series_of(site_id: str, device: str, point: str) -> int:
    """The series key of a point (see the module docstring)."""
    dev = f"{site_id}\0{device}".encode()
    point_half = hashlib.sha256(dev + b"\0" + point.encode()).digest()[:4]
    return int.from_bytes(hashlib.sha256(dev).digest()[:4] + point_half, "big", signed=True)


def _sqlite_series(site_id: object, device: object, point: object) -> int | None:
    if not (isinstance(site_id, str) and isinstance(device, str) and isinstance(point, str)):
        return None  # NULL (or a non-text value) in, NULL out, as PostgreSQL's STRICT function
    return series_of(site_id, device, point)


def register_sqlite(db: sqlite3.Connection) -> None:
    """Make ``kbe_series(site_id, device, point)`` callable in SQL on this SQLite connection."""
    db.create_function("kbe_series", 3, _sqlite_series, deterministic=True)


class SeriesCache:
    """:func:`series_of` remembered per site, device and point, at most ``limit`` points.

    A site reports the same points again and again, so nearly every lookup is two dict hits (about
    0.1 µs); past ``limit`` points the memo starts again empty.
    """

    def __init__(self, limit: int = 131_072) -> None:
        self.limit = limit
        self.size = 0
        self.memo: dict[str, dict[str, dict[str, int]]] = {}

    def __call__(self, site_id: str, device: str, point: str) -> int:
        """The series of a point, from the memo when it is there."""
        try:
            return self.memo[site_id][device][point]
        except KeyError:
            return self.add(site_id, device, point)

    def site(self, site_id: str) -> dict[str, dict[str, int]]:
        """The memo of one site (device -> point -> series), for a caller looking up many of its points."""
        return self.memo.setdefault(site_id, {})

    def add(self, site_id: str, device: str, point: str) -> int:
        """Compute and remember a point's series (the memo emptied first when it is full)."""
        if self.size >= self.limit:
            self.memo.clear()
            self.size = 0
        found = self.site(site_id).setdefault(device, {})[point] = series_of(site_id, device, point)
        self.size += 1
        return found
