"""Modbus RTU/TCP acquisition: device profiles, codecs, block plans, one scheduler per bus, emulators."""
