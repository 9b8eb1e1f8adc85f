"""Commissioning: the checks a technician runs on site, and the report for the work order."""
