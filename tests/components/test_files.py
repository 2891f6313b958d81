"""Data-only migration: the files component with --map, owners kept by name, missing owners reported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shadowvault.components.base import CollectOptions, DirectoryView, RestoreOptions
from shadowvault.components.files import Files, parse_map
from shadowvault.errors import NotFoundError, UsageError
from tests.components.roots import make_root, passwd_entry


def _server(tmp_path: Path) -> Path:
    root = make_root(
        tmp_path / "old",
        users=[
            ("www-data", 33, 33, "www", "/var/www", "/usr/sbin/nologin"),
            ("app", 1005, 1005, "App", "/srv/app", "/bin/sh"),
        ],
        groups=[("www-data", 33, ""), ("app", 1005, "")],
    )
    data = root / "srv" / "data"
    (data / "site").mkdir(parents=True)
    (data / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (data / "app.db").write_bytes(b"db" * 1000)
    os.chown(data / "site", 33, 33)
    os.chown(data / "site" / "index.html", 33, 33)
    os.chown(data / "app.db", 1005, 1005)
    os.chmod(data / "app.db", 0o640)
    (root / "etc" / "untouched.conf").write_text("system state\n")
    return root


def _view(tmp_path: Path, source: Path) -> DirectoryView:
    collection = Files().collect(source, CollectOptions(paths=["/srv/data"]))
    collection.write_documents(tmp_path / "staging")
    assert "$y$" not in collection.documents["accounts.json"].decode()  # no password hashes
    return DirectoryView(source, documents_root=tmp_path / "staging")


def test_migration_maps_paths_and_keeps_owners_by_name(tmp_path: Path) -> None:
    view = _view(tmp_path, _server(tmp_path))
    target = make_root(
        tmp_path / "new",
        users=[("www-data", 48, 48, "", "/var/www", "/usr/sbin/nologin")],
        groups=[("www-data", 48, "")],
    )
    etc_before = sorted(p.name for p in (target / "etc").iterdir())
    options = RestoreOptions(target_root=target, maps=[parse_map("/srv/data=/data")], overwrite=True)
    component = Files()
    plan = component.plan(view, options)
    assert "/data/site/index.html" in plan.targets("create")
    assert any("app" in w and "--create-missing-accounts" in w for w in plan.warnings)
    component.apply(plan, view, options)
    page = target / "data" / "site" / "index.html"
    assert page.read_text() == "<h1>hi</h1>\n"
    assert (page.stat().st_uid, page.stat().st_gid) == (48, 48)  # www-data by name, not 33
    assert (target / "data" / "app.db").stat().st_uid == 1005  # unknown owner keeps its number
    assert sorted(p.name for p in (target / "etc").iterdir()) == etc_before  # no system state touched
    assert passwd_entry(target, "app") is None
    # a second run finds everything identical
    again = component.plan(view, options)
    assert not again.of("create") and not again.of("replace")


def test_create_missing_accounts(tmp_path: Path) -> None:
    view = _view(tmp_path, _server(tmp_path))
    target = make_root(
        tmp_path / "new",
        users=[("someone", 1005, 1005, "", "/home/s", "/bin/sh")],
        groups=[("someone", 1005, "")],
    )
    options = RestoreOptions(target_root=target, maps=[("/srv/data", "/data")], create_missing_accounts=True)
    component = Files()
    plan = component.plan(view, options)
    assert {"app", "www-data"} <= plan.targets("create", "user")
    component.apply(plan, view, options)
    app = passwd_entry(target, "app")
    assert app is not None and app[2] != "1005"
    assert (target / "data" / "app.db").stat().st_uid == int(app[2])
    assert (target / "data" / "site" / "index.html").stat().st_uid == 33


def test_include_selects_items_and_unknown_paths_are_named(tmp_path: Path) -> None:
    view = _view(tmp_path, _server(tmp_path))
    target = tmp_path / "plain"
    target.mkdir()
    options = RestoreOptions(target_root=target, includes=["/srv/data/site"])
    component = Files()
    plan = component.plan(view, options)
    component.apply(plan, view, options)
    assert (target / "srv/data/site/index.html").exists()
    assert not (target / "srv/data/app.db").exists()
    with pytest.raises(NotFoundError, match=r"/srv/other is not in the snapshot \(it has: /srv/data\)"):
        component.plan(view, RestoreOptions(target_root=target, includes=["/srv/other"]))
    with pytest.raises(UsageError, match="no etc/passwd"):
        component.plan(view, RestoreOptions(target_root=target, create_missing_accounts=True))
    with pytest.raises(UsageError, match="SRC=DST"):
        parse_map("/srv/data")


def test_restore_never_leaves_the_target_root(tmp_path: Path) -> None:
    """A symlink in the target that points at an absolute path means the target's path, not ours."""
    view = _view(tmp_path, _server(tmp_path))
    target = tmp_path / "t"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "srv").symlink_to(outside)  # absolute: must resolve to TARGET/<outside>, not <outside>
    component = Files()
    options = RestoreOptions(target_root=target)
    component.apply(component.plan(view, options), view, options)
    assert not any(outside.iterdir())
    assert (target / str(outside).lstrip("/") / "data/app.db").exists()


def test_every_plan_verb_has_its_past_tense():
    """An applied restore says what it did in the past tense: every verb a plan may hold has one."""
    from shadowvault.components.plan import DONE, VERBS, Action

    assert set(DONE) == set(VERBS)
    assert Action("install", "package", "hello").line(applied=True).startswith("installed ")
