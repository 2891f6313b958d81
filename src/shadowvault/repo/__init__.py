"""The repository: content-addressed, deduplicated, compressed and encrypted storage of backups."""
