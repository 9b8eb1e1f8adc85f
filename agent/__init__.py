"""kinhbac-edge agent: daemon, configuration, scheduler, control loops and health."""

__version__ = "0.1.0"
