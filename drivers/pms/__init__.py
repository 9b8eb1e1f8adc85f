"""Plantower PMS5003 / PMS7003 particulate sensors: frames, driver (device kind ``pms``), emulator."""
