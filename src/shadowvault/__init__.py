"""Shadowvault: shadow copies for Linux (a VSS analog) and the backup agent built on them."""

__version__ = "0.1.0"
