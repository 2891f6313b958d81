"""The names `--provider` accepts, known without importing a provider.

The CLI parses its options before it loads the providers (the repository's key is unlocked in
between: cli/repo_options.py); tests/shadow/test_providers.py checks the names against the registry.
"""

from __future__ import annotations

AUTO = "auto"  # the best provider that can serve each volume
NO_PROVIDER = "none"  # no shadow set: the live files are read
PROVIDER_NAMES = ("btrfs", "lvm", "reflink", "fanotify", "live")  # best first, as registry.all_providers()
