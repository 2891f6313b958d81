"""The environment variables that name the repository and its password (restic's RESTIC_* analogs).

Apart from cli/repo_options.py (which loads click) because cli/launch.py reads them before that."""

REPO_ENV = "SHADOWVAULT_REPOSITORY"
PASSWORD_ENV = "SHADOWVAULT_PASSWORD"
PASSWORD_FILE_ENV = "SHADOWVAULT_PASSWORD_FILE"
PASSWORD_COMMAND_ENV = "SHADOWVAULT_PASSWORD_COMMAND"
