"""Cabinet GPIO through gpiozero: relay and PWM dimming outputs, contact inputs as events.

:class:`~drivers.gpio.bank.GpioBank` is the output API the lighting and traffic controllers call
(``set_relay``, ``set_duty``, ``read_back``); the device kind ``gpio`` lives in
:mod:`drivers.gpio.driver`.
"""
