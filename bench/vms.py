"""VM backups through the hypervisor: full and incremental throughput of a 2 GiB disk, and the freeze window.

    .venv/bin/python bench/vms.py [--size-mib 2048] [--changed 0.05] [--freezes 5] [--no-guest]

Disk: a raw 2 GiB image filled with random data (incompressible, nothing deduplicates), attached to
a guest-less QEMU (`-machine none`). Full: the first backup. Incremental: 5 % of the 256 KiB chunks,
picked at random, get a 4 KiB write through the monitor (`qemu-io`), then the second backup reads
only those. Freeze window: backups of the tiny guest (tests/fixtures/tiny_vm.py, TCG) while it
writes fsynced records, from guest-fsfreeze-freeze to the end of the thaw. Needs root and QEMU.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.bare_qemu import bare_vm
from tests.fixtures.tiny_vm import tiny_vm
from tests.vm.helpers import FAST_KDF, declare, hmp_io

from shadowvault.jobs.backup_vm import VmBackupRequest, VmBackupResult, run_vm_backup
from shadowvault.repo.repository import Repository

CHUNK = 256 * 1024
MIB = 1024 * 1024


def line(label: str, result: VmBackupResult, size: int) -> str:
    stats = result.images[next(iter(result.images))]
    seconds = result.duration
    return (
        f"{label:12s} {seconds:7.2f} s  {size / MIB / seconds:8.1f} MiB/s of disk  "
        f"read {stats.bytes_read / MIB:8.1f} MiB ({stats.chunks_read} chunks, {stats.chunks_reused} reused)  "
        f"added {stats.new_bytes / MIB:8.1f} MiB; into the repository {result.copy_seconds:.2f} s"
    )


def throughput(size_mib: int, changed: float, work: Path) -> None:
    size = size_mib * MIB
    with bare_vm(size=f"{size_mib}M", name="bench") as vm:
        declare(work / "config", "bench", vm.qmp_socket)
        started = time.monotonic()
        block = work / "block.bin"
        for offset in range(0, size, 64 * MIB):  # random data, 64 MiB at a time, through the monitor
            block.write_bytes(os.urandom(64 * MIB))
            hmp_io(vm.qmp_socket, "drive0", f"write -s {block} {offset} {64 * MIB}")
        block.unlink()
        print(f"filled {size_mib} MiB with random data in {time.monotonic() - started:.1f} s")
        repo = Repository.init(work / "repo", "bench", kdf_params=FAST_KDF)
        try:
            full = run_vm_backup(repo, VmBackupRequest(vm="bench"))
            print(line("full", full, size))
            chunks = size // CHUNK
            picked = random.Random(13).sample(range(chunks), int(chunks * changed))
            for index in picked:
                hmp_io(vm.qmp_socket, "drive0", f"write -P {index % 251} {index * CHUNK + 8192} 4k")
            incremental = run_vm_backup(repo, VmBackupRequest(vm="bench"))
            print(line(f"incr {changed:.0%}", incremental, size))
        finally:
            repo.close()


def freeze_windows(count: int, work: Path) -> None:
    with tiny_vm(workload=True, name="tiny") as vm:
        declare(work / "config", "tiny", vm.qmp_socket, vm.agent_socket)
        vm.wait_for_ack(3)
        repo = Repository.init(work / "repo-tiny", "bench", kdf_params=FAST_KDF)
        windows = []
        try:
            for _ in range(count):
                result = run_vm_backup(repo, VmBackupRequest(vm="tiny"))
                windows.append(1000 * (result.definition.freeze_window or 0))
                vm.wait_for_ack(vm.acked() + 2)
        finally:
            repo.close()
        print(
            f"freeze window (guest agent freeze .. thaw, TCG guest under an fsync load), {count} backups: "
            f"median {statistics.median(windows):.0f} ms, max {max(windows):.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--freezes", type=int, default=5)
    parser.add_argument("--no-guest", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sv-bench-vms-"))
    os.environ["SHADOWVAULT_CONFIG_DIR"] = str(work / "config")
    os.environ["SHADOWVAULT_STATE_DIR"] = str(work / "state")
    os.environ["SHADOWVAULT_VM_SCAN"] = "0"  # only the VMs this bench starts
    try:
        throughput(args.size_mib, args.changed, work)
        if not args.no_guest:
            freeze_windows(args.freezes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
