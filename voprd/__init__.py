"""voprd: a continuous deterministic simulation testing daemon."""

__version__ = "0.1.0"
