"""control/config_base.py and the port/unit types of kernel/config_base.py: the declarations the
lighting and traffic configs share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from control.config_base import NAME, ControllerDeviceConfig
from control.lighting.config import MeterConfig, OutputConfig, PhotocellConfig
from control.lighting.kind import Config as LightingDevice
from control.traffic.config import ModbusOutputConfig
from control.traffic.kind import Config as TrafficDevice
from kernel.site import NAME_PATTERN


@pytest.mark.parametrize(("model", "driver"), [(LightingDevice, "lighting"), (TrafficDevice, "traffic")])
def test_each_controller_device_has_the_shared_fields_in_order(model: type, driver: str) -> None:
    assert issubclass(model, ControllerDeviceConfig)
    assert list(model.model_fields)[:3] == ["driver", "name", "enabled"]
    dev = model.model_validate({"driver": driver, "name": "ctl-1"})
    assert dev.enabled is True
    for bad in ("Ctl", "-ctl", ""):
        with pytest.raises(ValidationError, match="name"):
            model.model_validate({"driver": driver, "name": bad})
    with pytest.raises(ValidationError, match="driver"):
        model.model_validate({"driver": "modbus", "name": "ctl-1"})
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({"driver": driver, "name": "ctl-1", "colour": "red"})


def test_names_follow_the_site_pattern() -> None:
    assert NAME == NAME_PATTERN


@pytest.mark.parametrize(
    ("model", "base"),
    [
        (ModbusOutputConfig, {"driver": "modbus", "host": "h"}),
        (OutputConfig, {"type": "modbus", "host": "h", "relay_coil": 0}),
        (PhotocellConfig, {"type": "modbus_lux", "host": "h", "lux_register": 0}),
    ],
)
def test_modbus_endpoints_share_port_and_unit_bounds(model: type, base: dict[str, object]) -> None:
    cfg = model.model_validate(base)
    assert (cfg.port, cfg.unit) == (502, 1)
    assert model.model_validate({**base, "port": 65535, "unit": 0}).unit == 0
    assert model.model_validate({**base, "unit": 247}).unit == 247
    for bad in ({"port": 0}, {"port": 65536}, {"unit": -1}, {"unit": 248}):
        with pytest.raises(ValidationError):
            model.model_validate({**base, **bad})


def test_the_meter_keeps_its_own_unit_bound() -> None:
    base = {"type": "sdm630", "host": "h"}
    assert MeterConfig.model_validate(base).port == 502
    with pytest.raises(ValidationError):
        MeterConfig.model_validate({**base, "unit": 0})
