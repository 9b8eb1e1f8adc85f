"""Technician and operator tools."""
