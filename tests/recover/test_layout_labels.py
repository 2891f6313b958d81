"""Labels are recorded as the filesystem holds them: blkid's export form puts a backslash before a
space, a quote, `$` or a backslash (`LABEL=EFI\\ SYS`), and a recorded `EFI\\ SYS` would be made
again as another label (or refused: FAT labels cannot hold a backslash)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shadowvault.disk.layout import probe_filesystem

MIB = 1 << 20


@pytest.mark.parametrize(
    ("mkfs", "label"),
    [
        (["mkfs.ext4", "-q", "-F", "-L"], 'my root $x"q'),
        (["mkfs.ext4", "-q", "-F", "-L"], "a\\b"),
        (["mkfs.vfat", "-n"], "EFI SYS"),
    ],
)
def test_a_label_with_spaces_and_quotes_is_recorded_as_it_is(
    tmp_path: Path, mkfs: list[str], label: str
) -> None:
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(40 * MIB)
    subprocess.run([*mkfs, label, str(image)], check=True, capture_output=True)
    facts = probe_filesystem(str(image))
    assert facts["LABEL"] == label
    check = subprocess.run(["blkid", "-p", "-s", "LABEL", "-o", "value", str(image)], capture_output=True)
    assert check.stdout.decode().strip() == label  # blkid's own unescaped view agrees
