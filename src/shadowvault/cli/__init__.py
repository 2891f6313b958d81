"""The command line: one module per command group; each parses options, calls the library and prints."""
