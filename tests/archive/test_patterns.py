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


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/srv//www/./cache/", "/srv/www/cache/x"),
        ("/srv/www/../www/cache", "/srv/www/cache"),
        ("//srv", "/srv"),
    ],
)
def test_patterns_are_cleaned_as_restic_cleans_them(pattern, path):
    assert PathFilter(excludes=[pattern]).excluded(path)


def test_a_negated_pattern_takes_back_what_the_ones_before_it_matched():
    rules = PathFilter(excludes=["/home/*", "!/home/ann", "*.tmp"])
    assert rules.excluded("/home/bob") and rules.excluded("/home/bob/x")
    assert not rules.excluded("/home/ann") and not rules.excluded("/home/ann/notes")
    assert rules.excluded("/home/ann/a.tmp")  # a later pattern marks it again
    assert PathFilter(excludes=["!/home/ann", "/home/*"]).excluded("/home/ann")  # order matters
    # each list on its own: a case-sensitive `!` does not take back an --iexclude
    assert PathFilter(excludes=["!/home/ann"], iexcludes=["/HOME/*"]).excluded("/home/ann")
    restore = PathFilter(includes=["/srv/*", "!/srv/skip"])
    assert restore.included("/srv/app") and not restore.included("/srv/skip/x")
