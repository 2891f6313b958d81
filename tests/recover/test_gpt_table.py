"""GPT tables as disk/gpt.py writes and reads them: read back the same, read alike by util-linux
(partx and blkid, which check the CRCs), the backup copy at the end, damaged tables and partitions
past the usable area refused with one clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shadowvault.disk import gpt
from shadowvault.errors import UnsupportedError
from tests.fixtures.tools import require_tools

MIB = 1 << 20
ESP_UUID = "1f0e0001-0000-4000-8000-000000000001"
ROOT_UUID = "1f0e0002-0000-4000-8000-000000000002"
DISK_GUID = "1f0e0000-0000-4000-8000-0000000000d1"


def _table(disk_size: int) -> gpt.GptTable:
    return gpt.GptTable(
        DISK_GUID,
        (
            gpt.GptPartition(1, MIB, 64 * MIB, gpt.ESP_TYPE, ESP_UUID, "EFI System Partition"),
            gpt.GptPartition(
                2, 65 * MIB, disk_size - 66 * MIB, gpt.LINUX_FS_TYPE, ROOT_UUID, "räkna", (1 << 63) | 4
            ),
        ),
    )


def test_a_written_gpt_reads_back_the_same_and_util_linux_agrees(tmp_path: Path) -> None:
    require_tools("partx")
    image = tmp_path / "disk.img"
    size = 256 * MIB
    with open(image, "wb") as f:
        f.truncate(size)
    gpt.write_gpt(str(image), _table(size), size)
    assert gpt.read_gpt(str(image)) == _table(size)
    listed = subprocess.run(
        ["partx", "-g", "-r", "-o", "NR,START,SECTORS,UUID,TYPE,FLAGS", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    root_sectors = str((size - 66 * MIB) // 512)
    assert listed == [
        "1", "2048", "131072", ESP_UUID, gpt.ESP_TYPE, "0x0",
        "2", str(65 * 2048), root_sectors, ROOT_UUID, gpt.LINUX_FS_TYPE, "0x8000000000000004",
    ]  # fmt: skip
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(image)], capture_output=True, text=True)
    assert {"PTTYPE=gpt", f"PTUUID={DISK_GUID}"} <= set(probe.stdout.splitlines())
    with open(image, "rb") as f:  # the backup header in the last sector
        f.seek(size - 512)
        assert f.read(8) == gpt.SIGNATURE


def test_a_damaged_gpt_or_a_partition_past_the_end_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    size = 128 * MIB
    with open(image, "wb") as f:
        f.truncate(size)
    with pytest.raises(UnsupportedError, match="does not fit the disk's usable area"):
        gpt.write_gpt(str(image), _table(size + MIB), size)
    gpt.write_gpt(str(image), _table(size), size)
    with open(image, "r+b") as f:
        f.seek(512 + 40)  # the header's first usable LBA: its CRC no longer matches
        f.write(b"\x01")
    with pytest.raises(UnsupportedError, match="GPT header is damaged"):
        gpt.read_gpt(str(image))
    with open(image, "r+b") as f:
        f.write(bytes(2 * 512))  # no protective MBR, no header: not a GPT disk
    assert gpt.read_gpt(str(image)) is None
