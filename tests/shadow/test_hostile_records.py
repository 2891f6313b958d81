"""A shadow-set record in the state directory is input: damaged, edited by hand or copied from another
machine, it may name anything. Deleting the set must remove only what a provider makes in its own
place under its own naming, never the subvolume, directory, mount or logical volume a record names.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from shadowvault.shadow.exposure import Exposure, expose, exposures
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.volumes import list_volumes
from tests.shadow.store_helpers import make_set


def _store_record(store: ShadowStore, shadow: Shadow) -> str:
    set_id = store.new_id()
    store.save(
        ShadowSetManifest(
            id=set_id, created=time.time(), host=socket.gethostname(), state="created", shadows=[shadow]
        )
    )
    return set_id


def _mounted(path: Path) -> bool:
    return any(v.mount_point == str(path) for v in list_volumes(with_uuid=False))


def test_a_btrfs_record_naming_a_users_subvolume_does_not_delete_it(btrfs, cli):
    subprocess.run(
        ["btrfs", "subvolume", "create", str(btrfs.mount / "home")], check=True, capture_output=True
    )
    (btrfs.mount / "home" / "thesis.txt").write_text("four years\n")
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(
            volume=str(btrfs.mount),
            fstype="btrfs",
            provider="btrfs",
            path=str(btrfs.mount / "home"),
            provider_data={"subvolume": str(btrfs.mount / "home")},
        ),
    )
    done = cli("shadows", "delete", set_id)
    assert (btrfs.mount / "home" / "thesis.txt").read_text() == "four years\n"
    assert done.returncode == 0, done.stderr
    assert "did not make" in done.stderr
    assert store.ids() == []  # the record is dropped, not retried forever


def test_a_reflink_record_naming_a_users_directory_does_not_delete_it(xfs, cli):
    (xfs.mount / "data").mkdir()
    (xfs.mount / "data" / "ledger").write_text("accounts\n")
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(
            volume=str(xfs.mount),
            fstype="xfs",
            provider="reflink",
            path=str(xfs.mount / "data"),
            provider_data={"directory": str(xfs.mount / "data")},
        ),
    )
    done = cli("shadows", "delete", set_id)
    assert (xfs.mount / "data" / "ledger").read_text() == "accounts\n"
    assert done.returncode == 0, done.stderr
    assert "did not make" in done.stderr


def test_a_reflink_record_outside_the_shadow_directory_by_dotdot_is_refused(xfs, cli):
    (xfs.mount / "data").mkdir()
    (xfs.mount / "data" / "ledger").write_text("accounts\n")
    (xfs.mount / ".shadowvault").mkdir(mode=0o700)
    sneaky = f"{xfs.mount}/.shadowvault/../data"
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(
            volume=str(xfs.mount),
            fstype="xfs",
            provider="reflink",
            path=sneaky,
            provider_data={"directory": sneaky},
        ),
    )
    done = cli("shadows", "delete", set_id)
    assert (xfs.mount / "data" / "ledger").read_text() == "accounts\n"
    assert done.returncode == 0, done.stderr


def test_an_lvm_record_naming_a_mounted_filesystem_does_not_unmount_it(ext4, cli):
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(
            volume=str(ext4.mount),
            fstype="ext4",
            provider="lvm",
            path=str(ext4.mount),
            provider_data={"vg": "vg0", "lv": "root", "mount": str(ext4.mount), "device": ext4.device},
        ),
    )
    done = cli("shadows", "delete", set_id)
    assert _mounted(ext4.mount)
    assert done.returncode == 0, done.stderr
    assert "did not make" in done.stderr


def test_a_fanotify_record_naming_a_mount_and_a_directory_touches_neither(ext4, tmp_path, cli):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes").write_text("mine\n")
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(
            volume=str(ext4.mount),
            fstype="ext4",
            provider="fanotify",
            path=str(ext4.mount),
            provider_data={
                "view": str(ext4.mount),
                "store": str(keep),
                "record": str(keep / "notes"),
                "log": str(keep / "notes"),
            },
        ),
    )
    done = cli("shadows", "delete", set_id)
    assert _mounted(ext4.mount)
    assert (keep / "notes").read_text() == "mine\n"
    assert done.returncode == 0, done.stderr
    assert "did not make" in done.stderr


@pytest.mark.parametrize("data", [{"subvolume": 7}, {"subvolume": ["x"]}])
def test_a_record_with_wrongly_typed_provider_data_is_one_line_not_a_traceback(btrfs, cli, data):
    store = ShadowStore()
    set_id = _store_record(
        store,
        Shadow(volume=str(btrfs.mount), fstype="btrfs", provider="btrfs", path="", provider_data=data),
    )
    done = cli("shadows", "delete", set_id)
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr


def test_an_exposure_record_naming_a_mounted_filesystem_does_not_unmount_it(btrfs, ext4, cli):
    """`<id>.exposed` naming another mount (a damaged record): releasing the set leaves it mounted."""
    store = ShadowStore()
    manifest = make_set(store, [str(btrfs.mount)], "btrfs")
    (store.root / f"{manifest.id}.exposed").write_bytes(
        msgspec.json.encode(
            [
                Exposure(
                    set_id=manifest.id,
                    volume=str(btrfs.mount),
                    index=0,
                    source=str(ext4.mount),
                    at=str(ext4.mount),
                )
            ]
        )
    )
    done = cli("shadows", "delete", manifest.id)
    assert _mounted(ext4.mount)
    assert done.returncode == 0, done.stderr
    assert not Path(manifest.shadows[0].path).exists()
    assert store.ids() == []


def test_a_mount_made_where_an_exposure_was_unmounted_by_hand_is_left_alone(btrfs, tmp_path, mounts, cli):
    """The exposure was unmounted with umount(8) and the directory reused: that mount is not ours."""
    store = ShadowStore()
    manifest = make_set(store, [str(btrfs.mount)], "btrfs")
    at = tmp_path / "at"
    expose(store, manifest.id, None, at)
    subprocess.run(["umount", str(at)], check=True)
    mounts("-t", "tmpfs", "tmpfs", at)
    (at / "work").write_text("unsaved\n")
    done = cli("shadows", "delete", manifest.id)
    assert (at / "work").read_text() == "unsaved\n"
    assert done.returncode == 0, done.stderr
    assert exposures(store) == []
