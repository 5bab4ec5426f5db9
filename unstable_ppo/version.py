"""The package version: its one source (setup.py reads it from this file)."""

__version__ = "0.1.0"
