"""Device drivers (Modbus, serial frame sensors, GPIO), each with its emulator beside it."""
