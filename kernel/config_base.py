"""Building blocks shared by every configuration model: strict models, secrets, error formatting."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from kernel.errors import ConfigError


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


MAX_YAML_BYTES = 4 * 1024 * 1024
"""Largest config, registry or profile file read (a site config is a few kilobytes)."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a YAML file."""
MAX_YAML_NODES = 200_000
"""Most nodes a YAML document may expand to (counting each alias use: no alias bombs)."""


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else raises ValueError naming it.

    Opened non-blocking, so a FIFO or a device (``/dev/zero``) is refused instead of read forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ValueError(f"cannot read file {str(path)!r}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"file {str(path)!r} is not a regular file")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise ValueError(f"cannot read file {str(path)!r}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise ValueError(f"file {str(path)!r} is larger than {limit} bytes")
    return data


class _LimitedLoader(yaml.SafeLoader):
    """A safe loader that refuses deep nesting and documents that expand too far through aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._kbe_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._kbe_depth += 1
        try:
            if self._kbe_depth > MAX_YAML_DEPTH:
                raise _TooDeep(f"nesting deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._kbe_depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise _TooDeep(f"the document expands to more than {MAX_YAML_NODES} values (an alias bomb?)")
        return node


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Values a node stands for once every alias is expanded (memoised: linear in the node graph)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = MAX_YAML_NODES + 1  # a cycle counts as too big
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo)
            if total > MAX_YAML_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo) + _expanded_size(v, memo)
            if total > MAX_YAML_NODES:
                break
    memo[id(node)] = total
    return total


class _TooDeep(Exception):
    pass


def parse_yaml_bytes(data: bytes, source: str) -> Any:
    """Parse YAML bytes under the size, depth and expansion limits; problems become a :class:`ConfigError`."""
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(source, [f"file is larger than {MAX_YAML_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"byte {exc.start}: not UTF-8 text ({exc.reason})"]) from exc
    if "\x00" in text:
        raise ConfigError(source, [f"byte {text.index(chr(0))}: a NUL character; this is not a text file"])
    try:
        return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooDeep as exc:
        raise ConfigError(source, [f"YAML refused: {exc}"]) from exc
    except RecursionError as exc:
        raise ConfigError(source, [f"YAML refused: nesting deeper than {MAX_YAML_DEPTH} levels"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"{where}YAML syntax error: {problem}"]) from exc


def load_yaml(path: Path) -> Any:
    """Read a YAML file under the limits; a missing, oversized, binary or invalid file is a :class:`ConfigError`."""
    try:
        data = read_limited(path, MAX_YAML_BYTES)
    except ValueError as exc:
        raise ConfigError(str(path), [str(exc).replace(f" {str(path)!r}", "")]) from exc
    return parse_yaml_bytes(data, str(path))


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
