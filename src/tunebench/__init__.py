"""tunebench: deep-learning tuning advice put to an empirical test."""

__version__ = "0.1.0"
