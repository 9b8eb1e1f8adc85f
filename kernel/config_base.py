"""Building blocks shared by every configuration model: strict models, secrets, error formatting."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from kernel.errors import ConfigError


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_relative(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


RelPath = Annotated[Path, AfterValidator(_resolve_relative)]
"""A path in a config file; a relative one is taken relative to the file's own folder."""


def format_loc(loc: tuple[int | str, ...], union_tags: Collection[str] = ()) -> str:
    """Turn a pydantic error location into ``devices[2].points[5].type``.

    ``union_tags`` are the discriminator values of the model's tagged unions: pydantic puts them in
    error locations after the list index (``devices.2.modbus.unit``); they are left out of the path.
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


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"{where}YAML syntax error: {problem}"]) from exc


def check_secret_file(path: Path) -> Path:
    """A secret (key, password) file must exist and be readable by its owner only (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"secret file {str(path)!r} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"secret file {str(path)!r} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"secret file {str(path)!r} has mode {stat.S_IMODE(st.st_mode):04o}, but it must be 0600 "
            f"(chmod 600 {path})"
        )
    if not os.access(path, os.R_OK):
        raise ValueError(f"secret file {str(path)!r} is not readable by this user")
    return path
