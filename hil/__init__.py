"""Hardware-in-the-loop rigs: emulators assembled into sites, with faults injected on a schedule."""
