"""Where an S3 repository's credentials come from, and the one line saying none were found.

By default the client library's chain finds them in the environment of the process that opens the
repository (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/credentials). A job names its own in a file of
AWS variables (`environment_file`, docs/jobs.md): whether the timer, the CLI or the daemon runs the
job, it then uses the same credentials. The daemon says so when its environment has none
(`set_default_chain_owner`): the caller's credentials were never its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shadowvault.errors import ConfigError

NAMES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
DEFAULT_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"


@dataclass(frozen=True)
class S3Credentials:
    """AWS variables given for one repository (they take precedence over the process's own);
    `source` names where they came from, for messages. repr never shows the values."""

    source: str
    variables: Mapping[str, str]

    def __repr__(self) -> str:
        return f"S3Credentials(source={self.source!r}, names={sorted(self.variables)})"


def parse_environment(text: str, source: str) -> S3Credentials:
    """`NAME=VALUE` lines (blank lines, `#` comments, `export ` and quotes around a value as a shell
    or systemd's EnvironmentFile= takes them); only the AWS variables of NAMES."""
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            raise ConfigError(f"{source}, line {number}: not NAME=VALUE")
        if name not in NAMES:
            raise ConfigError(f"{source}, line {number}: {name} is not one of {', '.join(NAMES)}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        variables[name] = value
    if ("AWS_ACCESS_KEY_ID" in variables) != ("AWS_SECRET_ACCESS_KEY" in variables):
        raise ConfigError(f"{source}: give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY together")
    return S3Credentials(source, variables)


_default_chain = {"owner": "", "hint": DEFAULT_HINT}


def set_default_chain_owner(owner: str, hint: str) -> None:
    """Name whose environment the default chain reads (the daemon's, not its caller's) and what to do
    when it has no credentials: the messages of this process say so from now on."""
    _default_chain.update(owner=owner, hint=hint)


def missing_message(url: str, credentials: S3Credentials | None) -> str:
    """The one line for a repository whose requests found no credentials to sign with."""
    if credentials is not None:
        return (
            f"no S3 credentials for {url} in {credentials.source}: give AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY there, or an AWS_PROFILE that has them"
        )
    owner = _default_chain["owner"]
    who = f"{owner} has no S3 credentials" if owner else "no S3 credentials"
    return f"{who} for {url}: {_default_chain['hint']}"
