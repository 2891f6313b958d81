"""system-state's LDIF export of a slapd database is the snapshot's (hostile input): a damaged one (a
value that is not base64 where it says `::`, a DN that is not UTF-8) is refused in one line naming the
line and the entry, at the plan, before anything is written (slapadd would find it half-way)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.inprocess_cli import one_error_line, run

SUFFIX = "dc=example,dc=com"
GOOD = f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: E\ndc: example\n\n"
BAD_BASE64 = GOOD + f"dn: uid=carol,{SUFFIX}\nobjectClass: account\nuid: carol\ndescription:: not*base64\n\n"
DN_NOT_UTF8 = GOOD + "dn:: " + base64.b64encode(f"uid=d\xe4ve,{SUFFIX}".encode("latin-1")).decode() + "\n"


def _ldap_json() -> bytes:
    record = {
        "suffix": SUFFIX,
        "database_index": 1,
        "config": "/etc/ldap/slapd.conf",
        "directory": "/var/lib/ldap",
        "ldif": "ldap/example.ldif",
        "entries": 2,
    }
    return json.dumps({"databases": [record]}).encode()


@pytest.mark.parametrize(
    ("ldif", "expected"),
    [
        (BAD_BASE64, f"(entry uid=carol,{SUFFIX}): the value of description is not valid base64"),
        (DN_NOT_UTF8 + "objectClass: account\n\n", "the DN uid=d\\xe4ve"),
    ],
)
def test_a_damaged_ldif_export_is_refused_before_anything_is_written(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ldif: str, expected: str
) -> None:
    documents = {"ldap.json": _ldap_json(), "ldap/example.ldif": ldif.encode("latin-1")}
    monkeypatch.setattr(system_state, "collect_ldap", lambda _root: documents)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("ldaphost\n")
    assert run(env, "backup", "--component", "system-state", "--source-root", root).exit_code == 0
    target = tmp_path / "target"
    target.mkdir()
    restore = ["restore", "latest", "--component", "system-state", "--no-packages", "--target-root", target]
    for dry in (["--dry-run"], []):
        line = one_error_line(run(env, *restore, *dry))
        assert f"the backup's LDIF export of {SUFFIX} (ldap/example.ldif) is damaged: line " in line, line
        assert expected in line, line
    assert list(target.iterdir()) == []  # not even /etc
