"""Config, registry and profile files read safely: size, depth and alias limits, secret file modes.

Nothing here imports pydantic: the running agent reads files through it (update versions, keys).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from kernel.errors import ConfigError

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
