"""The ground floor every other package stands on: readings, errors, clock, metrics, config base,
commands and the device-kind protocol. It imports nothing of the project's."""
