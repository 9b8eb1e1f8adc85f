"""Street lighting: astro clock with a photocell window, dimming profiles, calendar and remote overrides,
lamp-failure detection from circuit energy meters, outputs by GPIO relays and PWM or Modbus."""
