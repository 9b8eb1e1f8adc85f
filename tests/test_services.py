"""Services live in the run context, not in module globals; gpiozero's global pin factory is never used."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from drivers.gpio.factory import PinFactories, mock_factory
from kernel.services import Services
from kernel.sink import ListSink
from kernel.source import RunContext
from models.config import InferenceConfig
from models.service import ModelRegistries

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kernel", "drivers", "sync", "models", "control", "agent")


def global_pin_factory_uses(source: str) -> list[int]:
    """Lines where ``source`` reads or sets gpiozero's process-wide ``Device.pin_factory``.

    Caught: ``Device.pin_factory`` for any name imported from gpiozero (aliases too),
    ``gpiozero.Device.pin_factory``, and ``getattr``/``setattr(Device, "pin_factory", ...)``.
    """
    tree = ast.parse(source)
    from_gpiozero: set[str] = set()
    gpiozero_modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gpiozero":
            from_gpiozero.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            gpiozero_modules.update(a.asname or a.name for a in node.names if a.name.split(".")[0] == "gpiozero")

    def is_gpiozero_class(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in from_gpiozero
        if isinstance(node, ast.Attribute):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            return isinstance(base, ast.Name) and base.id in gpiozero_modules
        return False

    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "pin_factory" and is_gpiozero_class(node.value)) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "delattr")
            and len(node.args) >= 2
            and is_gpiozero_class(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "pin_factory"
        ):
            lines.append(node.lineno)
    return sorted(lines)


def devices_without_pin_factory(source: str) -> list[int]:
    """Lines creating a gpiozero device (a class imported from ``gpiozero``) without ``pin_factory=``:
    such a device silently uses, and on first use creates, gpiozero's global factory."""
    tree = ast.parse(source)
    classes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "gpiozero":
            classes.update(a.asname or a.name for a in node.names if a.name.endswith(("Device", "LED", "Button")))
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in classes
        and not any(k.arg == "pin_factory" for k in node.keywords)
    )


def test_every_gpiozero_device_gets_its_pin_factory_explicitly() -> None:
    assert devices_without_pin_factory("from gpiozero import LED\nLED(17)\n") == [2]
    hits = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for line in devices_without_pin_factory(path.read_text(encoding="utf-8")):
                hits.append(f"{path.relative_to(REPO)}:{line}")
    assert hits == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from gpiozero import Device\nDevice.pin_factory = f\n",
        "from gpiozero import Device as D\nx = D.pin_factory\n",
        "import gpiozero\nx = gpiozero.Device.pin_factory\n",
        "import gpiozero.devices as gd\ngd.Device.pin_factory = None\n",
        "from gpiozero import Device\nsetattr(Device, 'pin_factory', f)\n",
    ],
)
def test_the_check_catches_global_pin_factory_uses(snippet: str) -> None:
    assert global_pin_factory_uses(snippet) != []


def test_the_check_leaves_explicit_factories_alone() -> None:
    ok = "from gpiozero import LED\nled = LED(17, pin_factory=self.pin_factory)\nx = cfg.pin_factory\n"
    assert global_pin_factory_uses(ok) == []


def test_no_module_reads_or_sets_gpiozeros_global_pin_factory() -> None:
    hits = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for line in global_pin_factory_uses(path.read_text(encoding="utf-8")):
                hits.append(f"{path.relative_to(REPO)}:{line}")
    assert hits == [], "gpiozero's Device.pin_factory is process-wide state; pass pin_factory= instead"


def _ctx(services: Services | None = None) -> RunContext:
    return RunContext(site=None, sink=ListSink(), services=services or Services())  # type: ignore[arg-type]


def test_services_are_per_run_and_made_once() -> None:
    a, b = _ctx(), _ctx()
    assert ModelRegistries.of(a) is ModelRegistries.of(a)
    assert ModelRegistries.of(a) is not ModelRegistries.of(b)
    cfg = InferenceConfig()
    assert ModelRegistries.of(a).for_config(cfg) is ModelRegistries.of(a).for_config(cfg)
    assert ModelRegistries.of(a).for_config(cfg) is not ModelRegistries.of(b).for_config(cfg)


def test_a_provided_pin_factory_serves_auto_only() -> None:
    pins = mock_factory()
    ctx = _ctx(Services(PinFactories(pins)))
    factories = ctx.services.get(PinFactories)
    assert factories.get("auto") is pins
    assert factories.get("mock") is not pins  # a device that names its factory gets that one
