"""Building blocks shared by every configuration model: strict models, path types, error formatting.

The file readers (`load_yaml`, `check_secret_file`, ...) live in :mod:`kernel.config_files` and are
re-exported here."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from kernel.config_files import (  # noqa: F401 - re-exported: the models' modules read files through here
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    check_secret_file,
    load_yaml,
    parse_yaml_bytes,
    read_limited,
)


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo is an error, not a silent default)
    and infinite or NaN numbers (``reconnect_max_s: .inf``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _resolve_relative(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


RelPath = Annotated[Path, AfterValidator(_resolve_relative)]
"""A path in a config file; a relative one is taken relative to the file's own folder."""

TcpPort = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port number (``port: TcpPort = 502``)."""

ModbusUnit = Annotated[int, Field(ge=0, le=247)]
"""A Modbus unit id a controller is addressed at; 0 (what most TCP controllers answer) included."""


_PLAIN_KEY = re.compile(r"[\w.:@/+-]+")


def format_loc(loc: tuple[int | str, ...], union_tags: Collection[str] = ()) -> str:
    """Turn a pydantic error location into ``devices[2].points[5].type``.

    ``union_tags`` are the discriminator values of the model's tagged unions: pydantic puts them in
    error locations after the list index (``devices.2.modbus.unit``); they are left out of the path.
    A key with spaces, newlines or nothing in it is quoted (``site['a b']``), never printed raw.
    """
    out = ""
    prev_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            prev_index = True
            continue
        if prev_index and part in union_tags:
            prev_index = False
            continue
        if part.startswith("function-") or part in ("tagged-union",):
            continue
        if not _PLAIN_KEY.fullmatch(part):
            out += f"[{part!r}]"  # a key with spaces, newlines or nothing in it is quoted, never printed raw
            prev_index = False
            continue
        out += f".{part}" if out else part
        prev_index = False
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."



def validation_problems(exc: ValidationError, union_tags: Collection[str] = ()) -> list[str]:
    """One ``path: message (got value)`` line per pydantic error (``union_tags``: see :func:`format_loc`)."""
    problems = []
    for err in exc.errors(include_url=False):
        path = format_loc(tuple(err["loc"]), union_tags)
        msg = err["msg"]
        if err["type"] == "missing":
            problems.append(f"{path}: required field is missing")
            continue
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown field")
            continue
        if err["type"] == "value_error":
            problems.extend(_joined(path, msg.removeprefix("Value error, ")))
            continue
        if "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{_short(err['input'])} is not valid: {msg}"
        problems.append(f"{path}: {msg}")
    return problems


_SUBPATH = re.compile(r"^((?:[A-Za-z_][\w.]*|\[\d+\])(?:\[\d+\])*(?:\.[\w]+(?:\[\d+\])*)*): (.+)$", re.S)


def _joined(path: str, msg: str) -> list[str]:
    """A model validator's ``"field: message; other[2].x: message"`` (or one problem a line) becomes full paths."""
    out = []
    for part in re.split(r"\n|; ", msg):
        m = _SUBPATH.match(part)
        if m is None:
            out.append(f"{path}: {part}")
            continue
        sub, text = m.groups()
        base = "" if path == "(top level)" else path
        joiner = "" if sub.startswith("[") else "."
        out.append(f"{base}{joiner}{sub}: {text}" if base else f"{sub}: {text}")
    return out
