"""LDIF as slapcat writes it, and a damaged export: one error naming the line and the entry."""

from __future__ import annotations

import pytest

from shadowvault.directory.ldif import LdifError, parse_entries

GOOD = (
    b"version: 1\n\n"
    b"# a comment\n"
    b"dn: uid=ann,ou=people,dc=example,dc=com\n"
    b"objectClass: inetOrgPerson\n"
    b"description: a long value folded\n"
    b"  over two lines\n"
    b"cn:: w4Fubg==\n"
    b"\n"
    b"dn:: dWlkPWLDqWEsb3U9cGVvcGxlLGRjPWV4YW1wbGUsZGM9Y29t\n"
    b"cn: Bea\n"
)


def test_slapcat_output_is_read_with_folded_lines_and_base64() -> None:
    ann, bea = parse_entries(GOOD)
    assert ann.dn == "uid=ann,ou=people,dc=example,dc=com"
    assert ann.attributes["description"] == [b"a long value folded over two lines"]
    assert ann.attributes["cn"] == ["Ánn".encode()]
    assert bea.dn == "uid=béa,ou=people,dc=example,dc=com"


@pytest.mark.parametrize(
    ("damaged", "expected"),
    [
        (
            GOOD.replace(b"cn:: w4Fubg==", b"cn:: w4Fub"),
            "line 8 (entry uid=ann,ou=people,dc=example,dc=com): the value of cn is not valid base64",
        ),
        (
            GOOD.replace(b"cn:: w4Fubg==", b"cn:: w4F*bg=="),
            "line 8 (entry uid=ann,ou=people,dc=example,dc=com): the value of cn is not valid base64",
        ),
        (GOOD.replace(b"dWlkPWLDqWEs", b"dWlkPWLpYSxv"), "line 10: the DN uid=b\\xe9a,o"),
        (GOOD.replace(b"dn:: dWlk", b"dn:: *Wlk"), "line 10: the value of dn is not valid base64"),
    ],
)
def test_a_damaged_export_is_one_line_naming_the_line_and_the_entry(damaged: bytes, expected: str) -> None:
    with pytest.raises(LdifError) as caught:
        parse_entries(damaged)
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message
