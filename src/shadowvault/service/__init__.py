"""The daemon: one coordinator for the machine behind a local HTTP/JSON API on a Unix socket."""
