"""Include/exclude globs: the rules users know from restic and gitignore."""

from __future__ import annotations

import pytest

from shadowvault.archive.patterns import PathFilter
from shadowvault.errors import UsageError


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.tmp", "/a/b/c.tmp", True),
        ("*.tmp", "/a/b.tmp/inner", True),  # a matching directory covers its contents
        ("*.tmp", "/a/b.tmpx", False),
        ("/home/*/.cache", "/home/ann/.cache/x", True),
        ("/home/*/.cache", "/home/ann/sub/.cache", False),
        ("/home/**/.cache", "/home/ann/sub/.cache", True),
        (".cache/thumbs", "/home/ann/.cache/thumbs/1.png", True),
        ("node_modules", "/src/app/node_modules", True),
        ("file?", "/x/file1", True),
        ("file[0-2]", "/x/file3", False),
        ("/a/b/", "/a/b/c", True),
        ("/a", "/ab", False),
    ],
)
def test_exclude_matching(pattern, path, matches):
    assert PathFilter(excludes=[pattern]).excluded(path) is matches


def test_non_utf8_paths_match():
    assert PathFilter(excludes=["*.bin"]).excluded(b"/d/\xff\xfe.bin")
    assert not PathFilter(excludes=["*.bin"]).excluded(b"/d/\xff\xfe.txt")


def test_includes_select_and_prune():
    f = PathFilter(includes=["/srv/data/*.db"], excludes=["/srv/data/skip.db"])
    assert f.included("/srv/data/app.db")
    assert not f.included("/srv/data/skip.db")
    assert not f.included("/srv/other.db")
    assert f.may_contain("/srv") and f.may_contain("/srv/data")
    assert not f.may_contain("/etc")
    assert PathFilter(includes=["*.db"]).may_contain("/anything")


def test_empty_pattern_is_a_usage_error():
    with pytest.raises(UsageError):
        PathFilter(excludes=[""])


def test_iexcludes_match_without_regard_to_case_and_excludes_keep_it():
    rules = PathFilter(excludes=["*.tmp"], iexcludes=["/home/*/.ENV", "SECRETS"])
    assert rules.excluded("/home/ann/.env") and rules.excluded("/srv/secrets/key")
    assert rules.excluded("/a/b.tmp") and not rules.excluded("/a/b.TMP")
