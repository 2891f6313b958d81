"""Bare-metal recovery: a machine's disk rebuilt from a backup (docs/recover.md)."""
