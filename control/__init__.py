"""Control loops that drive field equipment (lighting, traffic) inside their safety envelopes."""
