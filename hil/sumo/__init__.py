"""SUMO hardware-in-the-loop rig for the traffic-signal controller (dev extra only)."""
