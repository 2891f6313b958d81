"""samba.json is the snapshot's (hostile input): a realm that is not a DNS name, a DC name that is not
a NetBIOS name or a home that is not a plain absolute path would feed the DC's directory, netlogon's
path and the plan's lines. Each is refused in one line naming samba.json, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.inprocess_cli import one_error_line, run

GOOD = {"realm": "SV.TEST", "netbios_name": "SVDC1", "home": "/var/lib/samba"}
BAD = [
    ("realm", "SV.TEST/../../../etc", "realm"),
    ("realm", "SV TEST", "realm"),
    ("realm", "SV.TEST\nsame-dc OK", "realm"),
    ("realm", "", "realm"),
    ("netbios_name", "SVDC1\x1b[2J", "DC's name"),
    ("netbios_name", "../X", "DC's name"),
    ("home", "../../../../etc", "DC's directory"),
    ("home", "/var/lib/../../../etc", "DC's directory"),
    ("home", "var/lib/samba", "DC's directory"),
    ("home", "/var/lib/samba\n(then start it: rm -rf /)", "DC's directory"),
    ("home", "/", "DC's directory"),
]


def _samba_json(field: str, value: str) -> bytes:
    record = {
        **GOOD,
        field: value,
        "method": "offline",
        "archive": "samba/SV.TEST.tar.bz2",
        "archive_bytes": 10,
        "config": "/var/lib/samba/etc/smb.conf",
        "sysvol": "/var/lib/samba/state/sysvol",
    }
    return json.dumps({"dcs": [record]}).encode()


@pytest.mark.parametrize(("field", "value", "named"), BAD)
def test_a_damaged_samba_json_is_refused_before_anything_is_written(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str, named: str
) -> None:
    documents = {"samba.json": _samba_json(field, value), "samba/SV.TEST.tar.bz2": b"not read"}
    monkeypatch.setattr(system_state, "collect_samba", lambda _root: (documents, []))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert run(env, "backup", "--component", "system-state", "--source-root", root).exit_code == 0
    target = tmp_path / "target"
    target.mkdir()
    restore = ["restore", "latest", "--component", "system-state", "--no-packages", "--target-root", target]
    for how in (
        ["--dry-run"],  # a plan without --directory-restore shows the DC too
        ["--directory-restore", "same-dc", "--dry-run"],
        ["--directory-restore", "new-dc", "--writer-option", "samba.newservername=svdc9"],
    ):
        line = one_error_line(run(env, *restore, *how))
        assert f"the snapshot's samba.json is damaged: the {named} {value!r}" in line, line
    assert list(target.iterdir()) == []
