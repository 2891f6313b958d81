"""DNs as slapcat writes them and as people type them (RFC 4514): one DN, one normal form."""

from __future__ import annotations

import pytest

from shadowvault.directory import ldap_dn


def test_slapcats_hex_escapes_and_a_users_backslash_escapes_are_one_dn() -> None:
    # slapcat writes a leading # of a text value and a comma as \23 and \2C (slapadd + slapcat, 2.5)
    assert ldap_dn.normalize(r"cn=\23hash,dc=example,dc=com") == ldap_dn.normalize(
        r"CN=\#Hash, DC=Example,dc=com"
    )
    assert ldap_dn.normalize(r"cn=x\2Cy,dc=example,dc=com") == ldap_dn.normalize(r"cn=X\,Y,dc=example,dc=com")


def test_a_value_starting_with_a_sharp_is_the_ber_form_not_text() -> None:
    """RFC 4514 2.4/3: `cn=#04024869` is the BER encoding of a value (an OCTET STRING "Hi"), a DN
    other than `cn=\\#04024869`, the text `#04024869`."""
    ber = ldap_dn.normalize("cn=#04024869,dc=example,dc=com")
    assert ber == ldap_dn.normalize("CN=#04024869,dc=example,dc=com") == "cn=#04024869,dc=example,dc=com"
    assert ber != ldap_dn.normalize(r"cn=\#04024869,dc=example,dc=com")
    assert ber != ldap_dn.normalize(r"cn=\2304024869,dc=example,dc=com")


@pytest.mark.parametrize("dn", ["cn=#hash,dc=example,dc=com", "cn=#0402486,dc=example,dc=com", "cn=#,dc=x"])
def test_a_sharp_without_hex_pairs_is_not_a_dn(dn: str) -> None:
    with pytest.raises(ldap_dn.BadDn, match=r"BER form.*\\#"):
        ldap_dn.normalize(dn)


def test_an_escaped_trailing_space_is_part_of_the_value() -> None:
    assert ldap_dn.normalize("cn=a\\ ,dc=x") == ldap_dn.normalize("cn=a\\20,dc=x") == "cn=a\\ ,dc=x"
    assert ldap_dn.normalize("cn=a ,dc=x") == "cn=a,dc=x"
    assert ldap_dn.normalize("cn=a\\\\ ,dc=x") == "cn=a\\\\,dc=x"  # an escaped backslash, then a space
