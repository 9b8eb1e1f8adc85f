"""Write agent/runconfig.py: the running agent's plain config types, generated from the pydantic models.

    python tools/gen_runconfig.py           # rewrite agent/runconfig.py
    python tools/gen_runconfig.py --check   # exit 1 when agent/runconfig.py is not what this writes

``edge-agent run --config FILE`` validates the file with the pydantic models, then hands the running
agent the normalised config as JSON (docs/architecture.md, "Start-up"): the agent builds these frozen, slotted
dataclasses from it and never imports pydantic. Each runtime class has the pydantic model's field
names in the same order, and inherits the same pydantic-free mixins (the ``...Methods`` classes the
model inherits before ``StrictModel``), so the consumers' attribute reads and method calls are the
same on both. A tagged union is dispatched on its tag; ``devices`` on ``driver`` (the kinds below);
a model whose mixin sets ``KEEPS_FIELDS_SET`` carries ``model_fields_set`` (which fields the site set).
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agent.config import _SECTIONS, SiteConfig
from agent.system_config import Config as SystemConfig
from drivers.modbus.config import Config as ModbusConfig
from drivers.modbus.profile import Profile

OUT = Path(__file__).resolve().parents[1] / "agent" / "runconfig.py"

# Models the running agent is handed (their nested models follow), and their runtime class names.
ROOTS: dict[type[BaseModel], str] = {
    SiteConfig: "SiteConfig",
    Profile: "Profile",
    ModbusConfig: "ModbusConfig",
    SystemConfig: "SystemConfig",
}
# Device kinds with runtime types: a site using any other kind is run with its pydantic objects.
DEVICE_KINDS: dict[str, type[BaseModel]] = {"modbus": ModbusConfig, "system": SystemConfig}


class _Gen:
    def __init__(self) -> None:
        self.names: dict[type[BaseModel], str] = {}
        self.order: list[type[BaseModel]] = []
        self.mixins: dict[str, set[str]] = {}
        self.dispatch: list[str] = []

    def name(self, model: type[BaseModel]) -> str:
        if model not in self.names:
            name = ROOTS.get(model, model.__name__)
            if name in self.names.values():
                raise SystemExit(f"two models are called {name}: give one a name in ROOTS")
            self.names[model] = name
            for base in model.__bases__:
                if not issubclass(base, BaseModel):
                    self.mixins.setdefault(base.__module__, set()).add(base.__name__)
            for field in model.model_fields.values():
                self._walk(field.annotation)
            self.order.append(model)
        return self.names[model]

    def _walk(self, tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.name(tp)
        for arg in typing.get_args(tp):
            self._walk(arg)

    # -- a field's annotation and the expression that builds it from its JSON value ---------------

    def field(self, model: type[BaseModel], fname: str, info: FieldInfo, value: str) -> tuple[str, str]:
        if model is SiteConfig and fname == "devices":
            return "list[Any]", f"[_device(item) for item in {value}]"
        if model is SiteConfig and fname in _SECTIONS:
            return "None", f"_absent({fname!r}, {value})"
        if info.discriminator is not None:
            return self._union(model, fname, info.annotation, str(info.discriminator), value)
        return self.conv(info.annotation, value)

    def _union(self, model: type[BaseModel], fname: str, tp: Any, tag: str, value: str) -> tuple[str, str]:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        table = f"_{self.name(model).upper()}_{fname.upper()}"
        entries = []
        for member in members:
            (literal,) = typing.get_args(member.model_fields[tag].annotation)
            entries.append(f"    {literal!r}: _{self.name(member)},")
        annotation = " | ".join(self.name(m) for m in members)
        self.dispatch.append(
            f"{table}: dict[str, Callable[[Any], Any]] = {{\n" + "\n".join(entries) + "\n}\n"
        )
        return annotation, f"{table}[{value}[{tag!r}]]({value})"

    def conv(self, tp: Any, value: str) -> tuple[str, str]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            return self.conv(args[0], value)
        if origin in (Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != len(args) - 1 or len(rest) != 1:
                raise SystemExit(f"an untagged union: {tp!r}")
            inner, code = self.conv(rest[0], "v")
            if code == "v":
                return f"{inner} | None", value
            build = code.removesuffix("(v)")
            if not build.isidentifier():
                build = f"lambda v: {code}"
            return f"{inner} | None", f"_opt({build}, {value})"
        if origin is list:
            inner, code = self.conv(args[0], "x")
            return f"list[{inner}]", (f"list({value})" if code == "x" else f"[{code} for x in {value}]")
        if origin is dict:
            if args[0] is not str:
                raise SystemExit(f"a dict with non-string keys: {tp!r}")
            inner, code = self.conv(args[1], "x")
            return f"dict[str, {inner}]", (
                f"dict({value})" if code == "x" else f"{{k: {code} for k, x in {value}.items()}}"
            )
        if origin is Literal:
            return "Literal[" + ", ".join(repr(a) for a in args) + "]", value
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.name(tp), f"_{self.name(tp)}({value})"
        if tp is Path:
            return "Path", f"Path({value})"
        if tp in (str, int, float, bool):
            return tp.__name__, value
        if tp is Any:
            return "Any", value
        raise SystemExit(f"no runtime conversion for {tp!r}: add one to tools/gen_runconfig.py")

    # -- the module ----------------------------------------------------------------------------

    def classes(self) -> list[str]:
        out = []
        for model in self.order:
            name = self.names[model]
            bases = _own_mixins(model)
            doc = (model.__doc__ or name).strip().splitlines()[0]
            lines = [
                "@dataclass(frozen=True, slots=True)",
                f"class {name}({', '.join(bases)}):" if bases else f"class {name}:",
            ]
            lines.append(f'    """{doc}"""')
            lines.append("")
            builds = []
            for fname, info in model.model_fields.items():
                annotation, code = self.field(model, fname, info, f"d[{fname!r}]")
                lines.append(f"    {fname}: {annotation}")
                builds.append(f"        {fname}={code},")
            if getattr(model, "KEEPS_FIELDS_SET", False):
                lines.append("    model_fields_set: frozenset[str]")
                builds.append("        model_fields_set=frozenset(d['model_fields_set']),")
            out.append("\n".join(lines) + "\n")
            out.append(
                f"def _{name}(d: dict[str, Any]) -> {name}:\n    return {name}(\n"
                + "\n".join(builds)
                + "\n    )\n"
            )
        return out


def _own_mixins(model: type[BaseModel]) -> list[str]:
    """The pydantic-free classes a model inherits before StrictModel (its methods)."""
    return [base.__name__ for base in model.__bases__ if not issubclass(base, BaseModel)]


HEADER = '''"""The running agent's config: plain frozen dataclasses built from the normalised JSON of a config the
pydantic models already validated (``edge-agent run`` checks the file, then hands this JSON over).

GENERATED by tools/gen_runconfig.py from the pydantic models; do not edit: ``make runconfig``
rewrites it, and tests/agent/test_runconfig.py fails when it is stale. Field names are the models';
methods come from the same pydantic-free mixins the models inherit. Nothing here imports pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

'''

FOOTER = '''
T = TypeVar("T")


def _opt(build: Callable[[Any], T], value: Any) -> T | None:
    return None if value is None else build(value)


def _absent(section: str, value: Any) -> Any:
    if value is not None:
        raise ValueError(f"{section}: this section has no runtime types; the agent runs it with its pydantic models")
    return None


def _device(item: dict[str, Any]) -> Any:
    return DEVICE_KINDS[item["driver"]](item)


def site_config(data: dict[str, Any]) -> SiteConfig:
    """The site config from its normalised JSON (``data`` was validated by the pydantic models)."""
    return _SiteConfig(data)


def profile(data: dict[str, Any]) -> Profile:
    """A Modbus profile from its normalised JSON (validated by the pydantic models)."""
    return _Profile(data)
'''


def render() -> str:
    """The text of agent/runconfig.py."""
    gen = _Gen()
    for root in ROOTS:
        gen.name(root)
    for model in DEVICE_KINDS.values():
        gen.name(model)
    imports = []
    for module in sorted(gen.mixins):
        imports.append(f"from {module} import {', '.join(sorted(gen.mixins[module]))}\n")
    body = gen.classes()
    kinds = "".join(f"    {kind!r}: _{gen.name(model)},\n" for kind, model in DEVICE_KINDS.items())
    text = HEADER + "".join(imports) + "\n\n" + "\n\n".join(body) + "\n\n" + "\n\n".join(gen.dispatch)
    text += "\nDEVICE_KINDS: dict[str, Callable[[dict[str, Any]], Any]] = {\n" + kinds + "}\n"
    text += '"""Device kinds with runtime types, by ``driver``."""\n'
    text += f"\nSECTIONS = {tuple(_SECTIONS)!r}\n"
    text += (
        '"""Optional sections without runtime types: a site that has one runs with its pydantic objects."""\n'
    )
    return text + "\n" + FOOTER


def main(argv: list[str]) -> int:
    """Write (or with ``--check``, compare) agent/runconfig.py."""
    text = _formatted(render())
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.name} is stale: run make runconfig (python tools/gen_runconfig.py)", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


def _formatted(text: str) -> str:
    """``text`` as ``ruff format`` writes it (the project's style), so the check compares like with like."""
    import subprocess

    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), "format", "--stdin-filename", str(OUT), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ruff format failed: {proc.stderr.strip()}")
    return proc.stdout


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
