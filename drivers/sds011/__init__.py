"""Nova Fitness SDS011 particulate sensor: frames, driver (device kind ``sds011``), emulator."""
