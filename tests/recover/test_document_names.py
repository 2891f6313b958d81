"""A component's documents are read from the snapshot's own documents only: samba.json naming its
archive `/etc/hostname` or `../../x` (a hostile repository) is refused in one line before anything
is written, instead of feeding a file of the machine doing the restore to samba-tool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.components.roots import make_root
from tests.inprocess_cli import one_error_line, run


def _samba_json(archive: str) -> bytes:
    record = {
        "realm": "SV.TEST",
        "netbios_name": "SVDC1",
        "method": "offline",
        "archive": archive,
        "archive_bytes": 10,
        "config": "/etc/samba/smb.conf",
        "home": "/var/lib/samba",
        "sysvol": "/var/lib/samba/sysvol",
    }
    return json.dumps({"dcs": [record]}).encode()


@pytest.mark.parametrize("archive", ["/etc/hostname", "../../../../../../etc/hostname", "samba/../../x"])
def test_a_document_name_leaving_the_documents_is_refused(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: str
) -> None:
    monkeypatch.setattr(
        system_state, "collect_samba", lambda _root: ({"samba.json": _samba_json(archive)}, [])
    )
    root = make_root(tmp_path / "root")
    done = run(env, "backup", "--component", "system-state", "--source-root", root)
    assert done.exit_code == 0, done.stderr
    target = tmp_path / "target"
    target.mkdir()
    for dry in (("--dry-run",), ()):
        args = ["restore", "latest", "--component", "system-state", "--target-root", target]
        args += ["--directory-restore", "new-dc", "--writer-option", "samba.newservername=svdc9", *dry]
        line = one_error_line(run(env, *args))
        assert f"names a document {archive!r} outside its documents" in line, line
    assert list(target.iterdir()) == []
