"""Firmware conformance suite: a pytest suite a test bench runs against a Modbus device under test.

Run it with ``edge-agent firmware-test`` or ``pytest firmware_tests/ [options]``; see
``docs/firmware-tests.md``.
"""
