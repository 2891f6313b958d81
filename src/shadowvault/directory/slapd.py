"""slapd (OpenLDAP) as the tools see it: its configuration, its mdb databases, slapcat and slapadd.

Shared by the ldap writer (shadow/writers/ldap.py: databases as components, an LDIF kept in the
manifest) and the system-state component (components/directory_server.py: an LDIF export per
database, rebuilt in a target root), so it sits below both and imports neither.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import tempfile
from dataclasses import dataclass

from shadowvault import proc
from shadowvault.errors import CommandError, WriterError
from shadowvault.process_table import option_value, processes

DEFAULT_CONFIG_DIR = "/etc/ldap/slapd.d"


@dataclass
class MdbDatabase:
    """One `database mdb` section of slapd's configuration."""

    index: int  # slapcat -n
    suffix: str
    directory: str
    nosync: bool = False


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def parse_slapd_conf(path: str) -> tuple[list[MdbDatabase], str | None]:
    """The mdb databases of a slapd.conf, and its pidfile."""
    databases: list[MdbDatabase] = []
    pidfile, index, current = None, -1, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            key = key.lower()
            if key == "pidfile":
                pidfile = value.strip()
            elif key == "database":
                index += 1
                current = MdbDatabase(index + 1, "", "") if value.strip() == "mdb" else None
                if current is not None:
                    databases.append(current)
            elif current is not None and key == "suffix":
                current.suffix = _unquote(value)
            elif current is not None and key == "directory":
                current.directory = value.strip()
            elif current is not None and key == "dbnosync":
                current.nosync = True
    return databases, pidfile


def parse_slapd_d(path: str) -> tuple[list[MdbDatabase], str | None]:
    """The mdb databases of a cn=config directory (slapd.d), and its pidfile."""

    def attrs(ldif: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in re.sub(r"\n ", "", ldif).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                found.setdefault(key.strip().lower(), value.strip())
        return found

    pidfile = None
    root = os.path.join(path, "cn=config.ldif")
    if os.path.exists(root):
        with open(root) as f:
            pidfile = attrs(f.read()).get("olcpidfile")
    databases = []
    for name in sorted(glob.glob(os.path.join(path, "cn=config", "olcDatabase={*}mdb.ldif"))):
        with open(name) as f:
            a = attrs(f.read())
        m = re.search(r"\{(\d+)\}", os.path.basename(name))
        databases.append(
            MdbDatabase(
                int(m.group(1)) if m else 1,
                a.get("olcsuffix", ""),
                a.get("olcdbdirectory", ""),
                a.get("olcdbnosync", "").upper() == "TRUE",
            )
        )
    return databases, pidfile


def read_config(config: str) -> tuple[list[MdbDatabase], str | None]:
    if os.path.isdir(config):
        return parse_slapd_d(config)
    return parse_slapd_conf(config)


def config_args(config: str) -> list[str]:
    return ["-F", config] if os.path.isdir(config) else ["-f", config]


def as_owner_of(path: str, argv: list[str]) -> list[str]:
    """slapcat/slapadd as the database's owner, so files they create stay usable by slapd."""
    try:
        user = pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (KeyError, OSError):
        return argv
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return argv


def running_instances() -> list[tuple[str, list[MdbDatabase]]]:
    """Every running slapd: its configuration (slapd.conf or slapd.d) and the mdb databases it names."""
    found = []
    for p in processes({"slapd"}):
        config = option_value(p.argv, "-f") or option_value(p.argv, "-F") or DEFAULT_CONFIG_DIR
        try:
            databases, _ = read_config(config)
        except OSError:
            continue
        found.append((config, databases))
    return found


def count_entries(ldif: bytes) -> int:
    return ldif.count(b"\ndn: ") + ldif.startswith(b"dn: ")


def _database_args(suffix: str, index: int) -> list[str]:
    return ["-b", suffix] if suffix else ["-n", str(index)]


def export_ldif(config: str, suffix: str, index: int, directory: str) -> bytes:
    """slapcat of one database (one read transaction: consistent while slapd runs on mdb)."""
    argv = ["slapcat", *config_args(config), *_database_args(suffix, index)]
    try:
        return proc.run(as_owner_of(directory, argv), timeout=3600).stdout
    except CommandError as err:
        raise WriterError(f"slapcat of {suffix or directory} failed: {err}") from err


def load_ldif(config: str, directory: str, ldif: bytes, suffix: str, index: int) -> None:
    """Rebuild the database at `directory` (the one `config` names) from `ldif` with slapadd."""
    os.makedirs(directory, exist_ok=True)
    for name in ("data.mdb", "lock.mdb"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.unlink(path)
    with tempfile.NamedTemporaryFile("wb", suffix=".ldif", delete=False) as f:
        f.write(ldif)
    try:
        os.chmod(f.name, 0o644)
        argv = ["slapadd", "-q", *config_args(config), "-l", f.name, *_database_args(suffix, index)]
        proc.run(as_owner_of(directory, argv), timeout=3600)
    except CommandError as err:
        raise WriterError(f"slapadd into {directory} failed: {err}") from err
    finally:
        os.unlink(f.name)
