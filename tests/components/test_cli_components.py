"""`backup --component` / `restore --component` as a user runs them, through the real repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.components.roots import make_root, passwd_entry
from tests.components.test_files import _server
from tests.components.test_user_profiles import _profile_source


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def backup_component(cli, env, *args: str) -> str:
    done = cli("backup", *args, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = [m for m in _json_lines(done.stdout) if m.get("message_type") == "summary"]
    return summary["snapshot_id"]


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_new_laptop_through_the_repository(cli, env, tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    snap = backup_component(cli, env, "--component", "user-profiles", "--source-root", str(source))
    listed = cli("snapshots", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (info,) = json.loads(listed.stdout)
    assert info["components"] == ["user-profiles"]
    human = cli("snapshots", env={**env, "COLUMNS": "250"})
    assert "user-profiles" in human.stdout

    target = make_root(
        tmp_path / "laptop2",
        users=[("carol", 1000, 1000, "", "/home/carol", "/bin/sh")],
        groups=[("carol", 1000, "")],
    )
    before = (target / "etc/passwd").read_text()
    dry = cli(
        "restore",
        snap,
        "--component",
        "user-profiles",
        "--target-root",
        str(target),
        "--users",
        "alice",
        "--dry-run",
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert "create   file     /home/alice/.ssh/id_ed25519" in dry.stdout
    assert "create   user     alice" in dry.stdout
    assert "dry run, nothing changed" in dry.stderr
    assert (target / "etc/passwd").read_text() == before and not (target / "home").exists()

    done = cli(
        "restore",
        snap,
        "--component",
        "user-profiles",
        "--target-root",
        str(target),
        "--users",
        "alice",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (plan,) = [m for m in _json_lines(done.stdout) if m.get("message_type") == "plan"]
    assert plan["applied"] and plan["counts"]["create"] > 5
    alice = passwd_entry(target, "alice")
    assert alice is not None and alice[2] != "1000"
    key = target / "home/alice/.ssh/id_ed25519"
    assert key.read_bytes() == b"PRIVATE KEY\n" and key.stat().st_uid == int(alice[2])
    assert os.getxattr(key, "user.origin") == b"laptop-1"
    acl = subprocess.run(["getfacl", "-n", "-p", str(key)], capture_output=True, text=True, check=True).stdout
    assert "user:1001:r--" in acl
    assert (key.stat().st_mode & 0o777) == 0o640  # 0600 plus the ACL's mask
    assert not any(p.name.startswith(".shadowvault-staging") for p in target.iterdir())

    # again: the profile exists now and is left alone
    again = cli(
        "restore",
        snap,
        "--component",
        "user-profiles",
        "--target-root",
        str(target),
        "--users",
        "alice",
        "--dry-run",
        env=env,
    )
    assert "leave    profile  /home/alice" in again.stdout

    # item selection inside a profile, through the repository
    (target / "home/alice/.ssh/id_ed25519").unlink()
    picked = cli(
        "restore",
        snap,
        "--component",
        "user-profiles",
        "--target-root",
        str(target),
        "--users",
        "alice",
        "--include",
        "/home/alice/.ssh/id_ed25519",
        env=env,
    )
    assert picked.returncode == 0, picked.stderr
    assert "created   file     /home/alice/.ssh/id_ed25519" in picked.stdout
    assert "/home/alice/.bashrc" not in picked.stdout
    assert key.read_bytes() == b"PRIVATE KEY\n" and os.getxattr(key, "user.origin") == b"laptop-1"


def test_migration_through_the_repository(cli, env, tmp_path: Path) -> None:
    source = _server(tmp_path)
    snap = backup_component(cli, env, "--component", "files", "--source-root", str(source), "/srv/data")
    target = make_root(
        tmp_path / "new",
        users=[("www-data", 48, 48, "", "/var/www", "/usr/sbin/nologin")],
        groups=[("www-data", 48, "")],
    )
    done = cli(
        "restore",
        snap,
        "--component",
        "files",
        "--target-root",
        str(target),
        "--map",
        "/srv/data=/data",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "--create-missing-accounts" in done.stderr  # app is unknown on the target
    page = target / "data/site/index.html"
    assert page.read_text() == "<h1>hi</h1>\n" and page.stat().st_uid == 48
    assert not (target / "srv").exists()
    assert (target / "data/app.db").exists()

    other = make_root(tmp_path / "other")
    done = cli(
        "restore", snap, "--component", "files", "--target-root", str(other), "--exclude", "*.db", env=env
    )
    assert done.returncode == 0, done.stderr
    assert (other / "srv/data/site/index.html").exists() and not (other / "srv/data/app.db").exists()


def test_refusals_are_one_clear_line(cli, env, tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    snap = backup_component(cli, env, "--component", "user-profiles", "--source-root", str(source))
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_error_line(
        cli("restore", snap, "--component", "user-profiles", "--target-root", str(afile), env=env)
    )
    assert f"target root {afile} is not a directory" in line
    line = one_error_line(cli("restore", snap, "--component", "user-profiles", "--target-root", "/", env=env))
    assert "refusing to restore into / (the running system) without --yes-really" in line
    line = one_error_line(
        cli("restore", snap, "--component", "system-state", "--target-root", str(tmp_path), env=env)
    )
    assert f"snapshot {snap[:8]} has no system-state component (it has: user-profiles)" in line
    line = one_error_line(
        cli(
            "restore",
            snap,
            "--component",
            "user-profiles",
            "--target-root",
            str(tmp_path),
            "--users",
            "mallory",
            "--dry-run",
            env=env,
        )
    )
    assert "no profile for mallory (it has: alice, bob)" in line
    line = one_error_line(cli("backup", env=env))
    assert "give the PATHS to back up, or --component NAME" in line
    line = one_error_line(
        cli("backup", "--component", "user-profiles", "--source-root", str(tmp_path / "no"), env=env)
    )
    assert "is not a directory" in line
    line = one_error_line(cli("backup", "--component", "system-state", str(tmp_path), env=env))
    assert "PATHS are backed up by the files component: add --component files" in line


def test_hard_links_and_holes_survive_a_component_restore(cli, env, tmp_path: Path) -> None:
    source = make_root(
        tmp_path / "old", users=[("app", 1005, 1005, "", "/srv/app", "/bin/sh")], groups=[("app", 1005, "")]
    )
    data = source / "srv/data"
    data.mkdir(parents=True)
    (data / "one").write_bytes(b"linked\n")
    os.link(data / "one", data / "two")
    with open(data / "sparse.img", "wb") as f:
        f.truncate(64 << 20)
        f.write(b"head")
    os.chown(data / "one", 1005, 1005)
    snap = backup_component(cli, env, "--component", "files", "--source-root", str(source), "/srv/data")
    target = make_root(
        tmp_path / "new", users=[("app", 2005, 2005, "", "/srv/app", "/bin/sh")], groups=[("app", 2005, "")]
    )
    done = cli("restore", snap, "--component", "files", "--target-root", str(target), env=env)
    assert done.returncode == 0, done.stderr
    one, two = target / "srv/data/one", target / "srv/data/two"
    assert one.stat().st_ino == two.stat().st_ino and one.stat().st_nlink == 2
    assert one.stat().st_uid == 2005
    img = target / "srv/data/sparse.img"
    assert img.stat().st_size == 64 << 20 and img.stat().st_blocks * 512 < 1 << 20


def test_plain_backup_migrates_with_owners_by_name(cli, env, tmp_path: Path) -> None:
    """`backup PATHS` (no --component) holds the files component: --map and names from the tree."""
    data = tmp_path / "www"
    data.mkdir()
    (data / "index.html").write_text("hello\n")
    os.chown(data / "index.html", 33, 33)  # www-data on this (Debian) machine
    done = cli("backup", str(data), "--json", env=env)
    assert done.returncode == 0, done.stderr
    (summary,) = [m for m in _json_lines(done.stdout) if m.get("message_type") == "summary"]
    target = make_root(
        tmp_path / "new",
        users=[("www-data", 48, 48, "", "/var/www", "/usr/sbin/nologin")],
        groups=[("www-data", 48, "")],
    )
    dry = cli(
        "restore",
        summary["snapshot_id"],
        "--component",
        "files",
        "--target-root",
        str(target),
        "--map",
        f"{data}=/srv/www",
        "--dry-run",
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert "create   file     /srv/www/index.html" in dry.stdout
    done = cli(
        "restore",
        summary["snapshot_id"],
        "--component",
        "files",
        "--target-root",
        str(target),
        "--map",
        f"{data}=/srv/www",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    page = target / "srv/www/index.html"
    assert page.read_text() == "hello\n" and (page.stat().st_uid, page.stat().st_gid) == (48, 48)


def test_a_name_that_is_not_utf8_is_planned_restored_and_reported_exactly(cli, env, tmp_path: Path) -> None:
    """The plan's JSON names it as `ls --json` does (text with \\xNN, and its exact bytes), and the
    daemon's copy of the plan (Plan.from_dict) keeps the exact name."""
    import base64

    from shadowvault.components.plan import Plan

    source = make_root(tmp_path / "old", users=[], groups=[])
    (source / "srv/data").mkdir(parents=True)
    name = b"caf\xe9.txt"
    with open(os.path.join(os.fsencode(source / "srv/data"), name), "wb") as f:
        f.write(b"latin-1 name\n")
    snap = backup_component(cli, env, "--component", "files", "--source-root", str(source), "/srv/data")
    target = make_root(tmp_path / "new", users=[], groups=[])
    restore = ["restore", snap, "--component", "files", "--target-root", str(target), "--json"]

    planned = cli(*restore, "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr
    (plan,) = [m for m in _json_lines(planned.stdout) if m["message_type"] == "plan"]
    (action,) = [a for a in plan["actions"] if a["target"].startswith("/srv/data/caf")]
    assert action["verb"] == "create" and action["target"] == "/srv/data/caf\\xe9.txt"
    assert base64.b64decode(action["target_bytes"]) == b"/srv/data/" + name
    assert base64.b64decode(action["source_bytes"]) == b"srv/data/" + name
    assert os.fsencode(Plan.from_dict(plan).actions[-1].target) == b"/srv/data/" + name

    done = cli(*restore, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    restored = os.path.join(os.fsencode(target / "srv/data"), name)
    with open(restored, "rb") as f:
        assert f.read() == b"latin-1 name\n"
    (applied,) = [m for m in _json_lines(done.stdout) if m["message_type"] == "plan"]
    assert applied["applied"] and applied["counts"]["create"] >= 1
