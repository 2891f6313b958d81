"""A read-only FUSE view of a repository's snapshots (`shadowvault mount`, docs/mount.md)."""
