"""A recover target in use is refused in one line, untouched: here a whole-disk block device one of
whose partitions is mounted the way this project mounts partitions, through a loop device at the
partition's offset (such a loop neither claims the disk nor shows among its holders)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.inprocess_cli import one_error_line, run
from tests.recover.conftest import attach_loop as _attach
from tests.recover.test_hostile_layouts import GOOD, MIB


def test_a_disk_whose_partition_is_mounted_through_an_offset_loop_is_refused(
    env: dict[str, str], tmp_path: Path, small_snapshot: str, loops: list[str], mounts: Callable[..., None]
) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(256 * MIB)
    disk = _attach(loops, str(image))
    partition = _attach(loops, "-o", str(MIB), "--sizelimit", str(128 * MIB), disk)
    subprocess.run(["mkfs.ext4", "-q", "-F", partition], check=True)
    where = tmp_path / "mounted"
    where.mkdir()
    mounts(partition, where)
    (where / "precious").write_text("still here\n")
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(GOOD))
    for dry in (("--dry-run",), ()):  # the dry run first: it must refuse too, and writes nothing
        line = one_error_line(run(env, "recover", "--disk", disk, small_snapshot, "--layout", layout, *dry))
        assert line.endswith(f"{disk} is in use by {partition}: refusing to overwrite it"), line
    assert (where / "precious").read_text() == "still here\n"
    subprocess.run(["sync"], check=True)
    check = subprocess.run(["fsck.ext4", "-n", partition], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
