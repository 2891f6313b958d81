"""The error hierarchy: every error a user can see is a ShadowvaultError with a message written for them.

The CLI turns these into one line on stderr and an exit code; nothing below the CLI prints.
"""


class ShadowvaultError(Exception):
    """Base of every expected failure; `str(err)` is the one line shown to the user."""

    exit_code = 1
    manifest: object | None = None  # an aborted shadow set's error: its ShadowSetManifest, what the set did


class UsageError(ShadowvaultError):
    """The user asked for something that cannot be understood (bad argument, unknown name)."""

    exit_code = 2


class CommandError(ShadowvaultError):
    """An external command failed or timed out."""


class NotFoundError(ShadowvaultError):
    """A named object (volume, shadow set, snapshot, writer) does not exist."""


class PermissionDeniedError(ShadowvaultError):
    """The caller lacks the privilege the operation needs (root for freezing, for example)."""


class UnsupportedError(ShadowvaultError):
    """A provider or writer cannot serve the requested volume or instance."""


class ShadowError(ShadowvaultError):
    """A shadow set could not be created; the message names the writer or provider and the phase."""


class WriterError(ShadowError):
    """A writer failed an event."""


class ProviderError(ShadowError):
    """A provider failed to create or delete a shadow."""


class ShadowUncheckedError(ShadowError):
    """Whether a shadow still holds its point in time cannot be told now (its provider's query failed)."""


class ConfigError(ShadowvaultError):
    """A configuration file is invalid or unsafe (wrong owner, writable by others)."""


class RepositoryError(ShadowvaultError):
    """The repository is missing, unreadable, or damaged."""


class WrongPasswordError(RepositoryError):
    """No key of the repository opens with the given password."""


class IntegrityError(RepositoryError):
    """An object failed verification on read (bad MAC, bad hash, truncated)."""


class PartialFailure(ShadowvaultError):
    """The operation finished but some items failed (unreadable files, corrupt blobs); exit code 3."""

    exit_code = 3


class JobCancelledError(ShadowvaultError):
    """A running backup or restore was cancelled (through the daemon's API)."""

    exit_code = 130
