"""Signal outputs: a Modbus signal controller (with its emulator), GPIO relays per head, SUMO over TraCI."""
