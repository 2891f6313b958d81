"""`is_plain_absolute`: the one test of a path read from a record before anything is done at it."""

from __future__ import annotations

import pytest

from shadowvault.paths_within import is_plain_absolute


@pytest.mark.parametrize("path", ["/", "/srv", "/srv/data", "/var/lib/samba", "/a b/ä"])
def test_a_plain_absolute_path_is_one(path: str):
    assert is_plain_absolute(path)


NOT_PLAIN = ["", "srv", "./srv", "/srv/", "//srv", "/srv//data", "/srv/./data", "/srv/../etc", "/..", None, 7]


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_anything_else_is_not(value: object):
    assert not is_plain_absolute(value)
