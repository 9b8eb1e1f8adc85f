"""Operator fleet tools: wave rollouts (engine independent of balena), the balena backend, the CLI."""
