"""Which writers exist, how a `--writer NAME[:INSTANCE]` spec becomes one, and automatic selection.

Built-in writers are named here as "module:Class" and imported only when used, so a writer's
client library (psycopg, redis, ...) loads only for sets that need it. Writers declared in
writers.d are selected by their name (`--writer app` or `--writer script:app`).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable

import msgspec

from shadowvault.errors import ConfigError, NotFoundError, ShadowvaultError, UsageError
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.volumes import Volume, volume_of
from shadowvault.shadow.writers import config
from shadowvault.shadow.writers.appwriter import AppWriter
from shadowvault.shadow.writers.base import Writer

log = logging.getLogger(__name__)

BUILTIN_WRITERS: dict[str, str] = {
    "fsfreeze": "shadowvault.shadow.writers.fsfreeze:FsfreezeWriter",
    "script": "shadowvault.shadow.writers.script:ScriptWriter",
    "sqlite": "shadowvault.shadow.writers.sqlite:SqliteWriter",
    "postgresql": "shadowvault.shadow.writers.postgresql:PostgresqlWriter",
    "mariadb": "shadowvault.shadow.writers.mariadb:MariadbWriter",
    "redis": "shadowvault.shadow.writers.redis:RedisWriter",
    "ldap": "shadowvault.shadow.writers.ldap:LdapWriter",
    "samba": "shadowvault.shadow.writers.samba:SambaWriter",
    "qemu": "shadowvault.shadow.writers.qemu:QemuWriter",
}


def _load(target: str) -> type[Writer]:
    """The writer class `module:Class` names, imported now."""
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)  # a module's attribute, by the name in our table
    if not (isinstance(cls, type) and issubclass(cls, Writer)):
        raise TypeError(f"{target} is not a writer class")
    return cls


def writer_class(name: str) -> type[Writer]:
    """The class of built-in writer `name` (imported now)."""
    try:
        target = BUILTIN_WRITERS[name]
    except KeyError:
        raise UsageError(f"unknown writer {name!r} (valid: {', '.join(sorted(BUILTIN_WRITERS))})") from None
    return _load(target)


def writer_from_config(cfg: config.WriterConfig) -> Writer:
    """Build the writer a writers.d file declares."""
    if cfg.type == "sqlite":
        database = cfg.data.get("database")
        if not isinstance(database, str) or not database.startswith("/"):
            raise ConfigError(f"{cfg.path}: a sqlite writer needs `database` = an absolute path")
        return writer_class("sqlite")(database)
    if cfg.type in config.APP_WRITER_TYPES:  # credentials, on_failure, ... for one instance
        app_class = writer_class(cfg.type)
        assert issubclass(app_class, AppWriter)
        return app_class.from_config(cfg.name, cfg.data, cfg.path)
    if cfg.type in config.VM_WRITER_TYPES:  # its sockets come through vm/discovery.py, by name
        return writer_class(cfg.type)(cfg.name)
    if cfg.type == "external":
        from shadowvault.shadow.writers.external import ExternalWriter

        return ExternalWriter.from_config(cfg.name, cfg.data, cfg.path)
    from shadowvault.shadow.writers.script import ScriptWriter

    return ScriptWriter.from_config(cfg)


def configured_writers() -> list[Writer]:
    """Every writer declared in writers.d but VMs (they join a set only when named); an unsafe or
    invalid file raises ConfigError."""
    return [
        writer_from_config(cfg) for cfg in config.load_configs() if cfg.type not in config.VM_WRITER_TYPES
    ]


def _configured_by_name(name: str) -> Writer | None:
    for cfg in config.load_configs():
        if cfg.name == name:
            return writer_from_config(cfg)
    return None


def _valid_names() -> str:
    names = sorted(BUILTIN_WRITERS)
    try:  # as `writers list` names them
        names += sorted(
            f"{'external' if cfg.type == 'external' else 'script'}:{cfg.name}"
            for cfg in config.load_configs()
        )
    except ConfigError:
        pass
    return ", ".join(names)


def make_writer(spec: str) -> Writer:
    """The writer a user named: `fsfreeze`, `fsfreeze:/mnt/x`, `sqlite:/srv/app.db`, `script:app`, `app`."""
    name, sep, instance = spec.partition(":")
    if not name:
        raise UsageError(f"bad writer {spec!r}: expected NAME[:INSTANCE] (valid: {_valid_names()})")
    if name in ("script", "external") or (name not in BUILTIN_WRITERS and not sep):
        wanted = instance if name in ("script", "external") else name
        if not wanted:
            raise UsageError(f"--writer {name} needs the name of a writers.d entry: --writer {name}:NAME")
        writer = _configured_by_name(wanted)
        if writer is None or (name == "external" and writer.name != "external"):
            raise UsageError(f"unknown writer {spec!r} (valid: {_valid_names()})")
        return writer
    if name not in BUILTIN_WRITERS:
        raise UsageError(f"unknown writer {name!r} (valid: {_valid_names()})")
    writer = writer_class(name)(instance or None)
    if name in config.APP_WRITER_TYPES:  # a writers.d entry for this instance brings its settings
        for cfg in config.load_configs():
            if cfg.type == name:
                declared = writer_from_config(cfg)
                if declared.label == writer.label:
                    return declared
    return writer


def _lies_on(path: str, mounts: set[str]) -> bool:
    try:
        return volume_of(path).mount_point in mounts
    except NotFoundError:
        return False


def _applies_to(writer: Writer, mounts: set[str]) -> bool:
    """A configured writer serves the set when its paths or volumes lie on it (or it names neither)."""
    paths = list(writer.paths)
    volumes = [os.path.realpath(v) for v in writer.volumes]
    if not paths and not volumes:
        components = writer.identify() if writer.name != "script" else []
        paths = [p for c in components for p in c.paths]
        if not paths:
            return True
    return any(v in mounts for v in volumes) or any(_lies_on(p, mounts) for p in paths)


def discover_writers(volumes: list[Volume]) -> list[Writer]:
    """Writers for the data on `volumes`: each built-in's discover() plus the configured writers."""
    mounts = {v.mount_point for v in volumes}
    found: list[Writer] = []
    for writer in configured_writers():  # settings win
        if _applies_to(writer, mounts):
            found.append(writer)
        else:
            writer.release()
    for name in BUILTIN_WRITERS:
        try:
            cls = writer_class(name)
        except ImportError as err:  # a writer whose client library is missing cannot have instances here
            log.info("writer %s unavailable: %s", name, err)
            continue
        found.extend(cls.discover(volumes))
    return kept_first(found)


def kept_first(writers: Iterable[Writer], chosen: dict[str, Writer] | None = None) -> list[Writer]:
    """The first writer of each label (after those already `chosen`, which it adds to); every later
    one is released, so that no process an identify started outlives the choice."""
    unique = chosen if chosen is not None else {}
    for writer in writers:
        if unique.setdefault(writer.label, writer) is not writer:
            writer.release()
    return list(unique.values())


class WriterEntry(msgspec.Struct, kw_only=True):
    """One line of `writers list`: a writer type, a configured writer, or a discovered instance."""

    writer: str  # the --writer spec that selects it
    kind: str  # builtin | configured | discovered
    state: str  # stable | refused | failed_at_identify | unreachable | unavailable
    detail: str = ""
    components: list[Component] = []


def _entry(writer: Writer, kind: str, detail: str = "") -> WriterEntry:
    """The writer's line of `writers list`; the writer released after (it serves no set)."""
    try:
        return _probed_entry(writer, kind, detail)
    finally:
        writer.release()


def _probed_entry(writer: Writer, kind: str, detail: str) -> WriterEntry:
    try:
        components = writer.identify()
    except Exception as err:
        return WriterEntry(writer=writer.label, kind=kind, state="failed_at_identify", detail=str(err))
    try:
        writer.probe()  # wrong credentials, a server that is down: said now, not at the next backup
    except ShadowvaultError as err:
        return WriterEntry(
            writer=writer.label, kind=kind, state="unreachable", detail=str(err), components=components
        )
    return WriterEntry(writer=writer.label, kind=kind, state="stable", detail=detail, components=components)


def inventory(volumes: list[Volume] | None = None) -> list[WriterEntry]:
    """Every writer this machine has, like `vssadmin list writers`: never raises for a bad config."""
    from shadowvault.shadow.volumes import list_volumes

    entries = []
    for name in BUILTIN_WRITERS:
        try:
            cls = writer_class(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            entries.append(WriterEntry(writer=name, kind="builtin", state="stable", detail=doc))
        except ImportError as err:
            entries.append(WriterEntry(writer=name, kind="builtin", state="unavailable", detail=str(err)))
    configs, problems = config.scan_configs()
    for cfg in configs:
        if cfg.type in config.VM_WRITER_TYPES:
            continue  # listed with the VMs that run (below), as `qemu:NAME`
        try:
            writer = writer_from_config(cfg)
        except ShadowvaultError as err:
            entries.append(WriterEntry(writer=cfg.name, kind="configured", state="refused", detail=str(err)))
            continue
        entries.append(_entry(writer, "configured", str(cfg.path)))
    for path, message in problems:
        entries.append(WriterEntry(writer=path, kind="configured", state="refused", detail=message))
    if volumes is None:
        volumes = list_volumes(with_uuid=False)
    for name in BUILTIN_WRITERS:
        try:
            cls = writer_class(name)
            discovered = cls.running(volumes)
        except (ImportError, ShadowvaultError) as err:
            entries.append(WriterEntry(writer=name, kind="discovered", state="refused", detail=str(err)))
            continue
        entries.extend(_entry(writer, "discovered") for writer in discovered)
    return entries
