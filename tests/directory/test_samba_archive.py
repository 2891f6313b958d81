"""A forged samba-tool archive in a backup cannot write outside the recovered DC's directory.

The archive is the snapshot's (hostile input): a symlink member with a member written through it,
a symlink where the DC's smb.conf goes, an absolute name, `..`, a hard link to a file of this machine
or a device file is refused in one line, for same-dc (which unpacked with GNU tar) and new-dc (samba-tool
unpacks with tarfile, no filter), before anything is written: the files outside stay as they were and
the target holds nothing, no staging directory either.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.inprocess_cli import one_error_line, run

Member = tuple[tarfile.TarInfo, bytes]
VICTIM = "[global]\n\tworkgroup = MINE\n"  # a file of this machine a forged archive aims at


def _file(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _device(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info, b""


def _tar(members: list[Member], mode: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _archive(*members: Member) -> bytes:
    """An offline-looking samba-tool archive: backup.txt first, then `members`."""
    return _tar([_file("backup.txt", b"samba-tool offline backup\n"), *members], "w:bz2")


# each forgery, given the directory outside the DC (holding victim.txt)
FORGERIES: dict[str, Callable[[Path], bytes]] = {
    "write through a symlink": lambda out: _archive(_link("etc", str(out)), _file("etc/planted", b"x")),
    "smb.conf a symlink out": lambda out: _archive(_link("etc/smb.conf", str(out / "victim.txt"))),
    "sysvol a symlink out": lambda out: _archive(
        _link("state/sysvol", str(out)),
        _file("sysvol.tar.gz", _tar([_file("planted", b"x")], "w:gz")),
    ),
    "symlink with ..": lambda out: _archive(_link("up", "../../../../../../../../" + str(out))),
    "absolute name": lambda out: _archive(_file(str(out / "planted"), b"x")),
    "name with ..": lambda out: _archive(
        _file("private/../../../../../../../../" + str(out / "planted"), b"x")
    ),
    "hard link out": lambda out: _archive(_link("private/secrets", str(out / "victim.txt"), tarfile.LNKTYPE)),
    "device file": lambda out: _archive(_device("private/null")),
    "inside sysvol.tar.gz": lambda out: _archive(
        _file("sysvol.tar.gz", _tar([_link("d", str(out)), _file("d/planted", b"x")], "w:gz"))
    ),
}


def samba_json() -> bytes:
    """A samba.json naming one DC whose archive is samba/SV.TEST.tar.bz2."""
    record = {
        "realm": "SV.TEST",
        "netbios_name": "SVDC1",
        "method": "offline",
        "archive": "samba/SV.TEST.tar.bz2",
        "archive_bytes": 10,
        "config": "/var/lib/samba/etc/smb.conf",
        "home": "/var/lib/samba",
        "sysvol": "/var/lib/samba/state/sysvol",
    }
    return json.dumps({"dcs": [record]}).encode()


@pytest.mark.parametrize("forgery", list(FORGERIES))
@pytest.mark.parametrize("mode", ["same-dc", "new-dc"])
def test_a_forged_samba_archive_is_refused_and_writes_nothing(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str, mode: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text(VICTIM)
    documents = {"samba.json": samba_json(), "samba/SV.TEST.tar.bz2": FORGERIES[forgery](outside)}
    monkeypatch.setattr(system_state, "collect_samba", lambda _root: (documents, []))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = run(env, "backup", "--component", "system-state", "--source-root", root)
    assert done.exit_code == 0, done.stderr

    target = tmp_path / "target"
    target.mkdir()
    args = ["restore", "latest", "--component", "system-state", "--no-packages", "--target-root", target]
    args += ["--directory-restore", mode, "--writer-option", "samba.newservername=svdc9"]
    for dry in (("--dry-run",), ()):
        line = one_error_line(run(env, *args, *dry))
        assert "the snapshot's Samba archive samba/SV.TEST.tar.bz2" in line, line
        assert "unsafe member" in line, line
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == VICTIM
    assert list(target.iterdir()) == []  # not even a staging directory
