"""A Samba AD domain controller as its tools see it: its smb.conf, where it keeps its data, backup, recovery.

Shared by the samba writer (shadow/writers/samba.py) and the system-state component
(components/samba_directory.py), so it sits below both and imports neither. Samba's Python bindings
load only in the system's python3, so everything goes through samba-tool, testparm and the ldb tools.

Backup is `samba-tool domain backup offline` by default: it copies the DC's own database files under
the database locks (safe while samba runs), so the archive holds this DC's identity (its machine
secrets, its name) as well as the directory, and can bring back the same DC or seed a new one.
`online` takes a replica over DRS instead: a clone of the directory without this DC's secrets,
which can only become a new DC.

Recovery, into an empty directory laid out as `samba-tool domain provision --targetdir` makes it.
Everything is made in a staging directory next to it (`.NAME.shadowvault-partial`) and renamed into
place at the end: an interrupted recovery never leaves a half-made DC, with an smb.conf that would
start, under the final name, and the next run removes the leftover and starts again.
- new-dc: `samba-tool domain backup restore --newservername NAME`: the domain comes back on a new DC
  that seizes every role; the other DCs are removed from the directory (forest recovery).
- same-dc: the DC's own files from an offline archive, its smb.conf pointed at the new directory,
  the backup markers removed and sysvol's ACLs reset: the DC comes back under its own name.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from shadowvault import proc
from shadowvault.directory.samba_archive import SYSVOL_TAR, check_archive, unpack
from shadowvault.directory.samba_staging import require_target, staged
from shadowvault.errors import CommandError, UsageError, WriterError
from shadowvault.fsutil import nameless_file
from shadowvault.paths_within import is_plain_absolute
from shadowvault.process_table import option_value, processes

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/samba/smb.conf"
DC_ROLE = "active directory domain controller"
METHODS = ("offline", "online")
MODES = ("new-dc", "same-dc")
BACKUP_MARKERS = ("sidForRestore", "backupRename", "backupDate", "backupType")
TIMEOUT = 3600.0
ARCHIVE_LABEL = "the backup's Samba archive"


@dataclass
class SambaDc:
    """One DC's configuration: the paths and names its smb.conf gives (testparm's view, defaults included)."""

    config: str
    realm: str
    netbios_name: str
    private_dir: str
    state_dir: str
    lock_dir: str
    cache_dir: str
    sysvol: str

    @property
    def home(self) -> str:
        """The directory that holds the DC: a provision --targetdir, or the private dir's parent."""
        top = os.path.dirname(os.path.dirname(self.config))
        if os.path.realpath(self.private_dir) == os.path.realpath(os.path.join(top, "private")):
            return top
        return os.path.dirname(self.private_dir.rstrip("/"))

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "home": self.home}


def _testparm(config: str) -> dict[str, dict[str, str]]:
    """Every section of `config` with every parameter (defaults too), as testparm resolves them."""
    try:
        out = proc.run(["testparm", "--suppress-prompt", "-v", config], timeout=60).stdout.decode()
    except CommandError as err:
        raise WriterError(f"cannot read Samba's configuration {config}: {err}") from err
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in out.splitlines():
        header = re.fullmatch(r"\[(.+)\]", line.strip())
        if header:
            current = sections.setdefault(header.group(1).lower(), {})
            continue
        key, sep, value = line.strip().partition(" = ")
        if sep:
            current[key.lower()] = value.strip()
    return sections


def read_dc(config: str) -> SambaDc:
    """The DC that `config` configures; WriterError when it is not an AD DC's configuration."""
    if not os.path.isfile(config):
        raise WriterError(f"Samba's configuration {config} does not exist")
    sections = _testparm(config)
    glob_ = sections.get("global", {})
    if glob_.get("server role", "").lower() != DC_ROLE:
        raise WriterError(f"{config} does not configure an Active Directory domain controller")
    state_dir = glob_.get("state directory", "")
    return SambaDc(
        config=os.path.realpath(config),
        realm=glob_.get("realm", "").upper(),
        netbios_name=glob_.get("netbios name", "").upper(),
        private_dir=glob_.get("private dir", ""),
        state_dir=state_dir,
        lock_dir=glob_.get("lock directory", ""),
        cache_dir=glob_.get("cache directory", ""),
        sysvol=sections.get("sysvol", {}).get("path") or os.path.join(state_dir, "sysvol"),
    )


def _held_private_dirs(pid: int) -> set[str]:
    """Private dirs whose sam.ldb process `pid` holds open."""
    found: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("/sam.ldb"):
            found.add(os.path.dirname(target))
    return found


def running_dcs() -> list[tuple[SambaDc, int]]:
    """Every running samba DC and the pid of its root process.

    samba rewrites its command line (`samba: root process`), so `-s` is read when it is still there;
    otherwise the DC is known by the sam.ldb its processes hold, and the configuration is the one whose
    private dir that is: the provision --targetdir layout (private/../etc/smb.conf) or the default.
    """
    table = {p.pid: p for p in processes({"samba"})}
    roots: dict[int, set[str]] = {}
    for p in table.values():
        root = p
        while root.ppid in table:
            root = table[root.ppid]
        roots.setdefault(root.pid, set()).update(_held_private_dirs(p.pid))
    found = []
    for pid, held in roots.items():
        argv = table[pid].argv
        named = option_value(argv, "-s", "--configfile")
        for private in held:
            candidates = [named, os.path.join(os.path.dirname(private), "etc", "smb.conf"), DEFAULT_CONFIG]
            for config in dict.fromkeys(c for c in candidates if c and os.path.isfile(c)):
                try:
                    dc = read_dc(config)
                except WriterError:
                    continue
                if os.path.realpath(dc.private_dir) == os.path.realpath(private):
                    found.append((dc, pid))
                    break
    return found


def running_pid(dc: SambaDc) -> int | None:
    """The root pid of the samba that serves `dc`, or None when it is stopped."""
    for running, pid in running_dcs():
        if os.path.realpath(running.private_dir) == os.path.realpath(dc.private_dir):
            return pid
    return None


@dataclass
class Archive:
    """A `samba-tool domain backup` archive and how it was made."""

    path: Path
    method: str  # offline | online


def back_up(dc: SambaDc, workdir: str, method: str = "offline", server: str = "127.0.0.1") -> Archive:
    """Back `dc` up into an archive in `workdir` (online: over DRS from `server`, with the DC's machine
    account; needs the DC running)."""
    if method not in METHODS:
        raise UsageError(f"unknown Samba backup method {method!r} (valid: {', '.join(METHODS)})")
    argv = ["samba-tool", "domain", "backup", method, f"--targetdir={workdir}", "-s", dc.config]
    if method == "online":
        argv += [f"--server={server}", "-P"]
    try:
        proc.run(argv, timeout=TIMEOUT)
    except CommandError as err:
        raise WriterError(f"samba-tool domain backup {method} of {dc.realm} failed: {err}") from err
    made = sorted(glob.glob(os.path.join(workdir, "samba-backup-*.tar.bz2")))
    if not made:
        raise WriterError(f"samba-tool domain backup {method} of {dc.realm} left no archive in {workdir}")
    return Archive(Path(made[-1]), method)


_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_record(realm: str, netbios_name: str, home: str, where: str) -> None:
    """Refuse a backup's description of a DC that no DC could have written (one line naming `where`).

    It is read from the snapshot (hostile input) and feeds paths (the DC's directory, netlogon's
    `sysvol/<realm>`) and the plan's lines: the realm must be a DNS name, the name a NetBIOS name,
    the home a plain absolute path below / (no `.` or `..`, no control characters).
    """
    labels = realm.split(".")
    if len(realm) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise UsageError(f"{where} is damaged: the realm {realm!r} is not a DNS name")
    if (
        not 0 < len(netbios_name) <= 15
        or _CONTROL.search(netbios_name)
        or re.search(r'[\s\\/:*?"<>|]', netbios_name)
    ):
        raise UsageError(f"{where} is damaged: the DC's name {netbios_name!r} is not a NetBIOS name")
    below_root = home.rstrip("/")  # a trailing slash is the same directory; / itself is no DC's home
    if not below_root or not is_plain_absolute(below_root) or _CONTROL.search(home):
        raise UsageError(f"{where} is damaged: the DC's directory {home!r} is not a plain absolute path")


def _point_config(config: Path, targetdir: str, realm: str) -> None:
    config.write_text(point_config_at(config.read_text(), targetdir, realm))


def restore_new_dc(archive: str, targetdir: str, newservername: str, backed_up: str, realm: str) -> None:
    """The domain from `archive` on a new DC named `newservername` (it seizes every role).

    samba-tool writes the directory it is given, so it is given the staging directory; the smb.conf
    it wrote is then pointed at `targetdir`, where the DC is renamed to.
    """
    if not newservername:
        raise UsageError("a new DC needs a name: --writer-option samba.newservername=NAME")
    if newservername.upper() == backed_up.upper():
        raise UsageError(
            f"{newservername} is the backed-up DC's own name: recover it with --directory-restore same-dc, "
            "or give the new DC another name"
        )
    with staged(targetdir) as staging:
        argv = ["samba-tool", "domain", "backup", "restore", f"--backup-file={archive}"]
        argv += [f"--targetdir={staging}", f"--newservername={newservername}"]
        try:
            proc.run(argv, timeout=TIMEOUT)
        except CommandError as err:
            raise WriterError(f"samba-tool domain backup restore for {targetdir} failed: {err}") from err
        _point_config(Path(staging) / "etc" / "smb.conf", targetdir, realm)


# the smb.conf settings a provision --targetdir points at the DC's directory (as samba-tool's make_smbconf)
def _targetdir_paths(targetdir: str, realm: str) -> dict[str, dict[str, str]]:
    sysvol = os.path.join(targetdir, "state", "sysvol")
    return {
        "global": {
            "private dir": os.path.join(targetdir, "private"),
            "lock directory": targetdir,
            "state directory": os.path.join(targetdir, "state"),
            "cache directory": os.path.join(targetdir, "cache"),
            "binddns dir": os.path.join(targetdir, "bind-dns"),
        },
        "sysvol": {"path": sysvol},
        "netlogon": {"path": os.path.join(sysvol, realm.lower(), "scripts")},
    }


def point_config_at(text: str, targetdir: str, realm: str) -> str:
    """smb.conf `text` with the DC's directories moved to `targetdir` (other settings kept)."""
    wanted = _targetdir_paths(targetdir, realm)
    out: list[str] = []
    section = ""

    def flush() -> None:
        for key, value in wanted.get(section, {}).items():
            out.append(f"\t{key} = {value}")
        wanted.pop(section, None)

    for line in text.splitlines():
        header = re.fullmatch(r"\s*\[(.+)\]\s*", line)
        if header:
            flush()
            section = header.group(1).lower()
            out.append(line)
            continue
        key = line.strip().partition("=")[0].strip().lower()
        if key in wanted.get(section, {}):
            continue  # written at the section's end, pointing at targetdir
        out.append(line)
    flush()
    return "\n".join(out) + "\n"


def _present_markers(samdb: str) -> list[str]:
    out = proc.run(["ldbsearch", "-H", samdb, "-b", "@SAMBA_DSDB", "-s", "base"], timeout=120).stdout
    names = {line.partition(":")[0] for line in out.decode(errors="replace").splitlines()}
    return [m for m in BACKUP_MARKERS if m in names]


def restore_same_dc(archive: str, targetdir: str, realm: str) -> None:
    """The DC's own files from an offline `archive` into `targetdir`: it comes back under its own name.

    Made in the staging directory with an smb.conf pointing there (sysvolreset reads it), then pointed
    at `targetdir` and renamed to it.
    """
    require_target(targetdir)
    try:
        kind = proc.run(["tar", "-xjOf", archive, "backup.txt"], timeout=TIMEOUT).stdout.decode(
            errors="replace"
        )
        if "offline backup" not in kind:
            raise UsageError(
                "this Samba backup was taken online: a replica without the DC's own identity, which can only "
                "become a new DC (--directory-restore new-dc)"
            )
        with staged(targetdir) as staging:
            unpack(archive, staging, ARCHIVE_LABEL)
            config = Path(staging) / "etc" / "smb.conf"
            shutil.copyfile(config, f"{config}.orig")
            _point_config(config, staging, realm)
            sysvol = os.path.join(staging, "state", "sysvol")
            os.makedirs(sysvol, exist_ok=True)
            sysvol_tar = os.path.join(staging, "sysvol.tar.gz")
            if os.path.exists(sysvol_tar):  # files only; their NT ACLs are reset below, as after a provision
                unpack(sysvol_tar, sysvol, f"{ARCHIVE_LABEL}'s {SYSVOL_TAR}", lambda n: n.endswith(".NTACL"))
                os.unlink(sysvol_tar)
            os.unlink(os.path.join(staging, "backup.txt"))
            samdb = f"tdb://{staging}/private/sam.ldb"
            markers = _present_markers(samdb)
            if markers:
                ldif = "dn: @SAMBA_DSDB\nchangetype: modify\n" + "".join(f"delete: {m}\n-\n" for m in markers)
                proc.run(["ldbmodify", "-H", samdb], input=ldif.encode(), timeout=120)
            proc.run(["samba-tool", "ntacl", "sysvolreset", "-s", str(config)], timeout=TIMEOUT)
            _point_config(config, targetdir, realm)
    except CommandError as err:
        raise WriterError(f"recovering the DC into {targetdir} failed: {err}") from err


def recover(
    mode: str, archive: str, targetdir: str, *, realm: str, backed_up: str, newservername: str
) -> None:
    """Recover a DC from `archive` into `targetdir` as `mode` (new-dc or same-dc).

    The archive comes from the backup: it is checked whole before samba-tool or we unpack it.
    """
    if mode in MODES:
        check_archive(archive, ARCHIVE_LABEL)
    if mode == "new-dc":
        restore_new_dc(archive, targetdir, newservername, backed_up, realm)
    elif mode == "same-dc":
        restore_same_dc(archive, targetdir, realm)
    else:
        raise UsageError(f"unknown directory restore {mode!r} (valid: {', '.join(MODES)})")


def recover_bytes(
    mode: str, archive: bytes, targetdir: str, *, realm: str, backed_up: str, newservername: str
) -> None:
    """recover() from an archive held in memory (a document or a manifest's metadata)."""
    with nameless_file(archive) as path:  # the domain's secrets: never left in /tmp, even if killed
        recover(mode, path, targetdir, realm=realm, backed_up=backed_up, newservername=newservername)
