"""What the streaming serial sensors (PMS, SDS011, NMEA GPS) share: frame counters, the acquisition
loop over a transport, and the pseudo-terminal emulator runner with fault injection."""
