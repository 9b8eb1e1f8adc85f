"""NMEA 0183 GPS receivers: sentences, driver (device kind ``nmea_gps``), emulator."""
