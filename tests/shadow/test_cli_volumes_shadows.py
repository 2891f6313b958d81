"""`volumes list` and `shadows list/delete/expose/unexpose` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from shadowvault.shadow.store import ShadowStore
from tests.fixtures.loopfs import unmount_tree
from tests.fixtures.tools import require_tools
from tests.fixtures.unprivileged import run_as_nobody
from tests.shadow.store_helpers import dead_pid, make_set


def _one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("shadowvault: error:")
    return done.stderr


def test_volumes_list_shows_test_volumes_with_their_providers(cli, btrfs, ext4):
    done = cli("volumes", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["mount_point"]: row for row in json.loads(done.stdout)}
    assert rows[str(btrfs.mount)]["providers"] == ["btrfs", "reflink", "fanotify", "live"]
    assert rows[str(btrfs.mount)]["fstype"] == "btrfs"
    assert rows[str(btrfs.mount)]["device"] == btrfs.device
    assert rows[str(btrfs.mount)]["fs_uuid"]
    assert rows[str(ext4.mount)]["providers"] == ["fanotify", "live"]
    assert "not btrfs" in rows[str(ext4.mount)]["unsupported"]["btrfs"]
    assert "/proc" not in rows
    listed = json.loads(cli("volumes", "list", "--all", "--json").stdout)
    everything = {row["mount_point"]: row for row in listed}
    assert everything["/proc"]["providers"] == []
    human = cli("volumes", "list")
    assert human.returncode == 0 and "btrfs" in human.stdout
    line = next(line for line in human.stdout.splitlines() if line.startswith(f"{btrfs.mount} "))
    uuid = rows[str(btrfs.mount)]["fs_uuid"]
    assert line.split()[1:] == [btrfs.device, "btrfs", uuid, "btrfs,reflink,fanotify,live"]
    # --why: every provider that cannot serve a volume says why, under it
    why = cli("volumes", "list", "--why").stdout.splitlines()
    below = why[why.index(next(line for line in why if line.startswith(f"{ext4.mount} "))) + 1 :]
    reasons = [line.strip() for line in below[: len(rows[str(ext4.mount)]["unsupported"])]]
    assert sorted(reasons) == sorted(
        f"not {provider}: {reason.split(': ', 1)[1]}"
        for provider, reason in rows[str(ext4.mount)]["unsupported"].items()
    )
    assert any(r.startswith("not btrfs: it is ext4") for r in reasons)


def test_shadows_list_and_delete(cli, btrfs, ext4):
    store = ShadowStore()
    first = make_set(store, [str(btrfs.mount)], "btrfs", persistent=True)
    second = make_set(store, [str(ext4.mount)], "live", persistent=True)
    third = make_set(store, [str(btrfs.mount)], "btrfs", persistent=True)
    orphan = make_set(store, [str(btrfs.mount)], "btrfs", requester_pid=dead_pid())

    done = cli("shadows", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [m["id"] for m in listed] == [first.id, second.id, third.id]  # the orphan was reaped
    assert not Path(orphan.shadows[0].path).exists()
    assert listed[1]["shadows"][0]["provider"] == "live" and listed[1]["shadows"][0]["atomic"] is False
    second.shadows[0].invalid = "the snapshot overflowed"  # as validity.mark_invalid records it
    store.save(second)
    human = cli("shadows", "list")
    assert first.id in human.stdout and "btrfs" in human.stdout
    assert f"shadow of {ext4.mount} (live, not atomic, INVALID: the snapshot overflowed)" in human.stdout
    refused = _one_line_error(cli("shadows", "expose", second.id, "--at", "/tmp/never-made"))
    assert f"cannot expose the shadow of {ext4.mount}: the snapshot overflowed" in refused
    assert not Path("/tmp/never-made").exists()

    done = cli("shadows", "delete", first.id[:-1], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": [first.id]}
    assert not Path(first.shadows[0].path).exists()

    done = cli("shadows", "delete", "--oldest")
    assert done.returncode == 0 and second.id in done.stdout
    done = cli("shadows", "delete", "--all", "--json")
    assert json.loads(done.stdout) == {"deleted": [third.id]}
    assert not Path(third.shadows[0].path).exists()
    assert json.loads(cli("shadows", "list", "--json").stdout) == []


def test_bad_shadow_ids_are_one_line(cli):
    err = _one_line_error(cli("shadows", "delete", "20991231T000000-ffffff"))
    assert "no shadow set 20991231T000000-ffffff" in err
    _one_line_error(cli("shadows", "expose", "nope", "--at", "/tmp/never-made"))
    assert not Path("/tmp/never-made").exists()
    _one_line_error(cli("shadows", "delete", "--oldest"))
    _one_line_error(cli("shadows", "delete"), code=2)
    _one_line_error(cli("shadows", "delete", "x", "--all"), code=2)


def test_expose_and_unexpose(cli, btrfs):
    (btrfs.mount / "file.txt").write_bytes(b"as it was\n")
    subprocess.run(
        ["btrfs", "subvolume", "create", str(btrfs.mount / "sub")], check=True, capture_output=True
    )
    (btrfs.mount / "sub/nested.txt").write_bytes(b"in a nested subvolume\n")
    manifest = make_set(ShadowStore(), [str(btrfs.mount)], "btrfs", persistent=True)
    (btrfs.mount / "file.txt").write_bytes(b"changed later\n")
    (btrfs.mount / "sub/nested.txt").write_bytes(b"changed later\n")
    base = Path(tempfile.mkdtemp(prefix="sv-cli-expose-"))
    at = base / "view"
    try:
        done = cli("shadows", "expose", manifest.id, "--at", str(at), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["at"] == str(at)
        assert (at / "file.txt").read_bytes() == b"as it was\n"
        assert (at / "sub/nested.txt").read_bytes() == b"in a nested subvolume\n"  # its own image
        write = subprocess.run(["sh", "-c", f"echo x > {at}/new"], capture_output=True, text=True)
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        listed = json.loads(cli("shadows", "list", "--json").stdout)
        assert listed[0]["exposures"][0]["at"] == str(at)
        _one_line_error(cli("shadows", "expose", manifest.id, "--at", str(at)), code=2)
        wrong = cli("shadows", "expose", manifest.id, "--at", str(base / "x"), "--volume", "/nope")
        _one_line_error(wrong, code=2)

        done = cli("shadows", "unexpose", "--at", str(at))
        assert done.returncode == 0, done.stderr
        assert not at.exists()
        _one_line_error(cli("shadows", "unexpose", "--at", str(at)))

        again = cli("shadows", "expose", manifest.id[:12], "--at", str(at), "--volume", str(btrfs.mount))
        assert again.returncode == 0, again.stderr
        done = cli("shadows", "delete", manifest.id)  # unexposes first
        assert done.returncode == 0, done.stderr
        assert not at.exists()
        assert not Path(manifest.shadows[0].path).exists()
    finally:
        unmount_tree(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def test_a_user_who_is_not_root_gets_one_line(private_dirs, btrfs, nobody_pythonpath):
    """Shadow sets are root's: another user listing or deleting them is told so in one line."""
    require_tools("setpriv")
    make_set(ShadowStore(), [str(btrfs.mount)], "btrfs", persistent=True)
    os.chmod(private_dirs, 0o755)  # the config dir must be reachable; the state dir stays root's
    for args in (["shadows", "list"], ["shadows", "delete", "--all"]):
        done = run_as_nobody(nobody_pythonpath, "-m", "shadowvault.cli.launch", *args, timeout=60)
        assert "permission denied" in _one_line_error(done).lower()
    assert len(ShadowStore().list()) == 1


def test_a_mount_point_with_a_line_break_and_a_space_is_one_line_everywhere(cli, btrfs, tmp_path, mounts):
    """/proc's \\012 and \\040: a volume at `odd dir<newline>x` is listed, shadowed and shown on one line."""
    odd = tmp_path / "odd dir\nx"
    odd.mkdir()
    mounts("--bind", btrfs.mount, odd)  # the same filesystem mounted twice, once at an odd place
    shown = str(odd).replace("\n", "\\n")
    why = cli("volumes", "list", "--why")
    assert why.returncode == 0, why.stderr
    assert any(line.startswith(f"{shown} ") for line in why.stdout.splitlines())
    assert any(line.startswith("    not lvm: ") for line in why.stdout.splitlines())
    assert not any(line.startswith("x ") for line in why.stdout.splitlines())  # no forged line
    rows = {row["mount_point"] for row in json.loads(cli("volumes", "list", "--json").stdout)}
    assert str(odd) in rows and str(btrfs.mount) in rows
    made = cli("shadows", "create", "--volume", str(odd), "--provider", "btrfs")
    assert made.returncode == 0, made.stderr
    assert f"shadow of {shown} (btrfs, atomic): {shown}/.shadowvault/" in made.stdout
    assert not any(line.startswith("x") for line in made.stdout.splitlines())
    listed = cli("shadows", "list")
    assert f"  shadow of {shown} (btrfs): {shown}/.shadowvault/" in listed.stdout
    assert not any(line.startswith("x") for line in listed.stdout.splitlines())
    (manifest,) = ShadowStore().list()
    deleted = cli("shadows", "delete", manifest.id)
    assert deleted.returncode == 0, deleted.stderr
    assert not os.listdir(odd / ".shadowvault")
