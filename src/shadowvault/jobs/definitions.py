"""jobs.d: backups that run by themselves, one TOML file per job (`<config dir>/jobs.d/NAME.toml`).

    schedule = "daily"                       # systemd OnCalendar syntax
    repository = "/srv/backup/repo"
    password_file = "/etc/shadowvault/repo.pass"
    paths = ["/srv/data"]
    components = []                          # files, user-profiles, system-state
    writers = ["postgresql"]
    provider = "auto"                        # auto, btrfs, reflink, live, none
    tags = ["nightly"]
    excludes = ["*.tmp"]
    exclude_caches = true                    # optional, as the backup command's flags:
    exclude_larger_than = "2GiB"             #   --exclude-caches, --exclude-larger-than,
    one_file_system = true                   #   --one-file-system, --include-snapshots,
    include_snapshots = false                #   --exclude-if-present, --iexclude,
    exclude_if_present = [".nobackup"]       #   --ignore-inode, --ignore-ctime, --with-atime
    iexcludes = ["*.TMP"]
    ignore_inode = false
    ignore_ctime = false
    with_atime = false
    on_failure = ["/usr/local/sbin/page-admin"]   # optional: run when a run does not succeed
    environment_file = "/etc/shadowvault/s3.env"  # optional: AWS_* lines for an S3 repository

    [retention]                              # optional: forget after each run
    keep_last = 7
    keep_daily = 14
    prune = true

A job runs as root from a timer, so its file is refused unless only root could have changed it
(the checks writers.d uses, shadow/writers/trusted_exec.py), and so are its on_failure program and
its environment_file (the S3 credentials it runs with, wherever it runs: repo/s3_credentials.py).
A definition that cannot be used is one ConfigError line with exit status 2, naming the file.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowvault import paths, proc
from shadowvault.archive.exclude_rules import parse_size, parse_tag_rule
from shadowvault.config_file import read_toml
from shadowvault.errors import ConfigError, NotFoundError, ShadowvaultError, UsageError
from shadowvault.repo.forget import KeepPolicy
from shadowvault.repo.s3_credentials import S3Credentials, parse_environment
from shadowvault.repo.storage import is_remote
from shadowvault.repo.tag_lists import given_tags
from shadowvault.shadow.providers.registry import provider_names
from shadowvault.shadow.writers import config as writer_config
from shadowvault.shadow.writers import trusted_exec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PROVIDER_CHOICES = ("auto", "none", "live")  # plus every registered provider
COMPONENT_NAMES = ("files", "user-profiles", "system-state")
KEEP_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
TOP_KEYS = {
    "schedule",
    "repository",
    "password_file",
    "paths",
    "components",
    "writers",
    "provider",
    "tags",
    "excludes",
    "exclude_caches",
    "exclude_larger_than",
    "one_file_system",
    "include_snapshots",
    "exclude_if_present",
    "iexcludes",
    "ignore_inode",
    "ignore_ctime",
    "with_atime",
    "on_failure",
    "retention",
    "environment_file",
}


class JobDefinitionError(ConfigError):
    """A job definition (or a job's name) cannot be used: bad input, so exit status 2."""

    exit_code = 2


class InvalidJobNameError(JobDefinitionError, UsageError):
    """A name no job can have: the caller's mistake (the daemon answers 400)."""

    exit_code = 2


class NoSuchJobError(JobDefinitionError, NotFoundError):
    """No definition of the job: nothing there (the daemon answers 404), exit status 2 as before."""

    exit_code = 2


@dataclass(frozen=True)
class Retention:
    """What to forget after each run (restic's --keep-* rules over this job's snapshots), and prune."""

    policy: KeepPolicy = field(default_factory=KeepPolicy)
    prune: bool = False


@dataclass(frozen=True)
class JobDefinition:
    """One parsed and checked jobs.d file."""

    name: str
    path: Path
    schedule: str
    repository: str
    password_file: str
    paths: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)
    provider: str = "auto"
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    exclude_caches: bool = False
    exclude_larger_than: int | None = None  # bytes
    one_file_system: bool = False
    include_snapshots: bool = False
    exclude_if_present: list[str] = field(default_factory=list)  # NAME[:HEADER], checked
    iexcludes: list[str] = field(default_factory=list)
    ignore_inode: bool = False
    ignore_ctime: bool = False
    with_atime: bool = False
    retention: Retention = field(default_factory=Retention)
    on_failure: list[str] | None = None
    environment_file: str | None = None

    @property
    def job_tag(self) -> str:
        """The tag every snapshot of this job carries; retention only ever looks at these."""
        return f"job:{self.name}"


def jobs_dir() -> Path:
    """Where jobs are defined: `<config dir>/jobs.d`."""
    return paths.config_dir() / "jobs.d"


def check_name(name: str) -> str:
    """Refuse a job name that is not a plain file-name-and-unit-instance word."""
    if not NAME_PATTERN.match(name):
        raise InvalidJobNameError(
            f"invalid job name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, no '/')"
        )
    return name


def check_schedule(schedule: str, where: Path) -> None:
    """Refuse a schedule systemd would not accept as OnCalendar (checked by systemd-analyze when present)."""
    if not schedule.strip() or any(ch in schedule for ch in "\n\r\0"):
        raise JobDefinitionError(f"{where}: schedule must be one non-empty line of systemd OnCalendar syntax")
    if shutil.which("systemd-analyze", path=proc.DEFAULT_PATH) is None:
        return
    done = proc.run(["systemd-analyze", "calendar", schedule], check=False, timeout=30)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {done.returncode}"
        raise JobDefinitionError(f"{where}: schedule {schedule!r} is not valid OnCalendar syntax ({reason})")


def _string(data: dict[str, Any], key: str, where: Path, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise JobDefinitionError(f"{where}: `{key}` must be a non-empty string")
    return value


def _strings(data: dict[str, Any], key: str, where: Path) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise JobDefinitionError(f"{where}: `{key}` must be a list of non-empty strings")
    return list(value)


def _tags(data: dict[str, Any], where: Path) -> list[str]:
    try:
        return list(given_tags(_strings(data, "tags", where)))
    except UsageError as err:
        raise JobDefinitionError(f"{where}: `tags`: {err}") from None


def _flag(data: dict[str, Any], key: str, where: Path) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise JobDefinitionError(f"{where}: `{key}` must be true or false")
    return value


def _size(data: dict[str, Any], key: str, where: Path) -> int | None:
    """A size in bytes, given as a whole number or as the command line gives it ("500M", "2GiB")."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        try:
            return parse_size(value, f"`{key}`")
        except UsageError as err:
            raise JobDefinitionError(f"{where}: {err}") from err
    raise JobDefinitionError(f'{where}: `{key}` must be a size like "500M" or a number of bytes')


def _tag_specs(data: dict[str, Any], key: str, where: Path) -> list[str]:
    """restic's --exclude-if-present values, NAME[:HEADER], each checked."""
    specs = _strings(data, key, where)
    try:
        for spec in specs:
            parse_tag_rule(spec, f"`{key}`")
    except UsageError as err:
        raise JobDefinitionError(f"{where}: {err}") from err
    return specs


def _retention(value: Any, where: Path) -> Retention:
    if value is None:
        return Retention()
    if not isinstance(value, dict):
        raise JobDefinitionError(f"{where}: [retention] must be a table")
    unknown = sorted(set(value) - {*KEEP_KEYS, "prune"})
    if unknown:
        raise JobDefinitionError(
            f"{where}: unknown key retention.{unknown[0]} (known: {', '.join((*KEEP_KEYS, 'prune'))})"
        )
    counts: dict[str, int] = {}
    for key in KEEP_KEYS:
        count = value.get(key, 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < -1:
            raise JobDefinitionError(f"{where}: retention.{key} must be a whole number >= -1 (-1: unlimited)")
        counts[key.removeprefix("keep_")] = count
    prune = value.get("prune", False)
    if not isinstance(prune, bool):
        raise JobDefinitionError(f"{where}: retention.prune must be true or false")
    policy = KeepPolicy(
        last=counts["last"],
        hourly=counts["hourly"],
        daily=counts["daily"],
        weekly=counts["weekly"],
        monthly=counts["monthly"],
        yearly=counts["yearly"],
    )
    if prune and policy.is_empty():
        raise JobDefinitionError(f"{where}: retention.prune needs at least one keep_* rule")
    return Retention(policy=policy, prune=prune)


def _on_failure(value: Any, where: Path) -> list[str] | None:
    if value is None:
        return None
    try:
        writer_config.check_command(value, where, "on_failure")
    except JobDefinitionError:
        raise
    except ShadowvaultError as err:
        raise JobDefinitionError(str(err)) from err
    return list(value)


def _environment_file(value: Any, where: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise JobDefinitionError(f"{where}: `environment_file` must be an absolute path")
    try:
        writer_config.check_safe(value, "the environment_file")
    except ShadowvaultError as err:
        raise JobDefinitionError(f"{where}: {err}") from err
    return value


def s3_credentials(definition: JobDefinition) -> S3Credentials | None:
    """The S3 credentials the job names (its environment_file, read and checked now), for an S3
    repository; None: the running process's own."""
    if definition.environment_file is None or not is_remote(definition.repository):
        return None
    text = trusted_exec.read_checked(definition.environment_file, "the environment_file")
    return parse_environment(text.decode(errors="replace"), definition.environment_file)


def _read(path: Path) -> dict[str, Any]:
    """The checked and parsed file; its problems are bad input of the job (exit 2)."""
    try:
        return read_toml(path, "a job definition")
    except ShadowvaultError as err:
        raise JobDefinitionError(str(err)) from err


def parse(name: str, path: Path, data: dict[str, Any]) -> JobDefinition:
    """A definition from the parsed TOML of `path`; every key and value is checked."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise JobDefinitionError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    schedule = _string(data, "schedule", path)
    repository = _string(data, "repository", path)
    password_file = _string(data, "password_file", path)
    job_paths = _strings(data, "paths", path)
    components = _strings(data, "components", path)
    for component in components:
        if component not in COMPONENT_NAMES:
            raise JobDefinitionError(
                f"{path}: unknown component {component!r} (known: {', '.join(COMPONENT_NAMES)})"
            )
    if not job_paths and not components:
        raise JobDefinitionError(f"{path}: give `paths` to back up, or `components`")
    if job_paths and components and "files" not in components:
        raise JobDefinitionError(
            f"{path}: `paths` are backed up by the files component: add it to components"
        )
    for p in job_paths:
        if not p.startswith("/"):
            raise JobDefinitionError(f"{path}: path {p!r} is relative; give absolute paths")
    provider = _string(data, "provider", path, "auto")
    choices = (*PROVIDER_CHOICES, *provider_names())
    if provider not in choices:
        raise JobDefinitionError(f"{path}: unknown provider {provider!r} (valid: {', '.join(choices)})")
    check_schedule(schedule, path)
    return JobDefinition(
        name=name,
        path=path,
        schedule=schedule,
        repository=repository,
        password_file=password_file,
        paths=job_paths,
        components=components,
        writers=_strings(data, "writers", path),
        provider=provider,
        tags=_tags(data, path),
        excludes=_strings(data, "excludes", path),
        exclude_caches=_flag(data, "exclude_caches", path),
        exclude_larger_than=_size(data, "exclude_larger_than", path),
        one_file_system=_flag(data, "one_file_system", path),
        include_snapshots=_flag(data, "include_snapshots", path),
        exclude_if_present=_tag_specs(data, "exclude_if_present", path),
        iexcludes=_strings(data, "iexcludes", path),
        ignore_inode=_flag(data, "ignore_inode", path),
        ignore_ctime=_flag(data, "ignore_ctime", path),
        with_atime=_flag(data, "with_atime", path),
        retention=_retention(data.get("retention"), path),
        on_failure=_on_failure(data.get("on_failure"), path),
        environment_file=_environment_file(data.get("environment_file"), path),
    )


def load(path: Path) -> JobDefinition:
    """Parse and check one jobs.d file; its name is the file name without `.toml`."""
    name = check_name(path.name.removesuffix(".toml"))
    return parse(name, path, _read(path))


def definition_files(directory: Path | None = None) -> list[Path]:
    """Every `*.toml` in jobs.d (the directory itself checked like writers.d); none when it is absent."""
    directory = directory or jobs_dir()
    if not directory.exists():
        return []
    try:
        writer_config.check_safe(directory, "the jobs.d directory")
    except ShadowvaultError as err:
        raise JobDefinitionError(str(err)) from err
    return sorted(p for p in directory.glob("*.toml") if not p.name.startswith("."))


def defined_names(directory: Path | None = None) -> set[str]:
    """The name of every job jobs.d defines, whether its file loads or not (its records still count)."""
    return {p.name.removesuffix(".toml") for p in definition_files(directory)}


def find(name: str, directory: Path | None = None) -> JobDefinition:
    """The definition of job `name`; a clear error when there is none."""
    check_name(name)
    path = (directory or jobs_dir()) / f"{name}.toml"
    if not path.exists():
        raise NoSuchJobError(f"no job {name!r}: {path} does not exist")
    definition_files(directory)  # the directory's own check
    return load(path)


def scan(directory: Path | None = None) -> tuple[list[JobDefinition], list[tuple[str, str]]]:
    """Every definition that loads, and (file, message) for each that does not: for listings."""
    good: list[JobDefinition] = []
    bad: list[tuple[str, str]] = []
    for path in definition_files(directory):
        try:
            good.append(load(path))
        except ConfigError as err:
            bad.append((str(path), str(err)))
    return good, bad
