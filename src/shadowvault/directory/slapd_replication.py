"""What slapd's configuration says about one database's replication and its administrator.

A database with a `syncrepl` directive (olcSyncrepl) is a consumer: it follows a provider and
catches up from it after a restore (non-authoritative by nature). One with the syncprov overlay is
a provider: others follow it. Both at once is a multi-provider member. The rootdn and a cleartext
rootpw are how an authoritative restore may write to the running server. Both configuration forms
are read: slapd.conf (with its indented continuation lines) and a slapd.d (cn=config) directory.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass, field

from shadowvault.directory import ldap_dn
from shadowvault.directory.ldif import parse_entries


@dataclass
class DatabaseSettings:
    """The directives of one database section that matter for replication and for writing to it."""

    suffix: str = ""
    rootdn: str = ""
    rootpw: str = ""
    providers: list[str] = field(default_factory=list)  # provider= of each syncrepl
    syncprov: bool = False

    @property
    def role(self) -> str:
        """standalone | provider | consumer | multi-provider."""
        if self.providers and self.syncprov:
            return "multi-provider"
        if self.providers:
            return "consumer"
        return "provider" if self.syncprov else "standalone"


def _directives(path: str) -> list[tuple[str, str]]:
    """(keyword lowercased, rest) per directive of a slapd.conf, continuation lines joined."""
    joined: list[str] = []
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and joined:
                joined[-1] += " " + line.strip()
            else:
                joined.append(line.strip())
    out = []
    for line in joined:
        key, _, rest = line.partition(" ")
        out.append((key.lower(), rest.strip()))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _provider(syncrepl: str) -> str:
    """provider=URL of one syncrepl directive's parameters."""
    try:
        words = shlex.split(syncrepl)
    except ValueError:
        words = syncrepl.split()
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.lower() == "provider":
            return value
    return ""


def _from_slapd_conf(path: str) -> list[DatabaseSettings]:
    databases: list[DatabaseSettings] = []
    current: DatabaseSettings | None = None
    for key, rest in _directives(path):
        if key == "database":
            current = DatabaseSettings()
            databases.append(current)
        elif current is None:
            continue
        elif key == "suffix":
            current.suffix = _unquote(rest)
        elif key == "rootdn":
            current.rootdn = _unquote(rest)
        elif key == "rootpw":
            current.rootpw = _unquote(rest)
        elif key == "syncrepl":
            current.providers.append(_provider(rest))
        elif key == "overlay" and rest.strip() == "syncprov":
            current.syncprov = True
    return databases


def _first(values: list[bytes]) -> str:
    return values[0].decode(errors="replace") if values else ""


def _from_slapd_d(path: str) -> list[DatabaseSettings]:
    databases = []
    for name in sorted(glob.glob(os.path.join(path, "cn=config", "olcDatabase={*}*.ldif"))):
        with open(name, "rb") as f:
            entries = parse_entries(f.read())
        if not entries:
            continue
        attrs = entries[0].attributes
        overlays = glob.glob(os.path.join(name[: -len(".ldif")], "olcOverlay={*}syncprov.ldif"))
        databases.append(
            DatabaseSettings(
                suffix=_first(attrs.get("olcsuffix", [])),
                rootdn=_first(attrs.get("olcrootdn", [])),
                rootpw=_first(attrs.get("olcrootpw", [])),
                providers=[
                    _provider(re.sub(r"^\{\d+\}", "", v.decode())) for v in attrs.get("olcsyncrepl", [])
                ],
                syncprov=bool(overlays),
            )
        )
    return databases


def database_settings(config: str, suffix: str) -> DatabaseSettings:
    """The settings of the database serving `suffix` (an empty one when the configuration has none)."""
    databases = _from_slapd_d(config) if os.path.isdir(config) else _from_slapd_conf(config)
    wanted = _normal(suffix)
    for settings in databases:
        if settings.suffix and _normal(settings.suffix) == wanted:
            return settings
    return DatabaseSettings(suffix=suffix)


def _normal(dn: str) -> str:
    try:
        return ldap_dn.normalize(dn)
    except ldap_dn.BadDn:
        return dn.lower()
