"""Whether a VM can be backed up in the state QEMU reports it in (`query-status`), and what that means.

A running guest is copied as always: frozen by its agent when one answers, else crash-consistent.
A guest that runs no code (paused, started with `-S` and not yet started, suspended, shut down with
QEMU kept alive, stopped on an error) writes nothing to its disks, so QEMU's atomic copy is the
disks as they were when it stopped: crash-consistent, as after a power cut at that moment. Its
guest agent cannot answer (the guest's processes do not run), so it is not asked, and the backup
says why the copy is only crash-consistent. While a migration or a savevm/loadvm owns the disks
(incoming migration, migrated away, saving or loading a snapshot) there is nothing the host may
copy, and the backup is refused, naming the state.
"""

from __future__ import annotations

from shadowvault.errors import UnsupportedError

RUNNING = "running"

# QEMU's run states in which the guest runs no code and QEMU owns the disks: -> in words
STOPPED = {
    "paused": "paused",
    "prelaunch": "not started yet (QEMU was started with -S)",
    "suspended": "suspended (ACPI S3)",
    "shutdown": "shut down (QEMU still runs)",
    "debug": "stopped by a debugger",
    "watchdog": "stopped by its watchdog",
    "guest-panicked": "stopped after a guest kernel panic",
    "io-error": "stopped on a disk I/O error",
    "internal-error": "stopped on an emulation error",
}

# states in which another operation owns the disks: -> in words
BUSY = {
    "inmigrate": "waiting for or receiving an incoming migration",
    "postmigrate": "migrated away (its disks belong to the destination now)",
    "finish-migrate": "finishing a migration",
    "save-vm": "saving a snapshot (savevm)",
    "restore-vm": "loading a snapshot (loadvm)",
    "colo": "in COLO fault tolerance",
}


def guest_stopped(vm: str, status: str) -> str | None:
    """None for a running guest; in words why the guest runs no code when it is stopped in a state
    a backup can copy; UnsupportedError naming the state when the host must not copy its disks now."""
    if status == RUNNING:
        return None
    if status in STOPPED:
        return STOPPED[status]
    why = BUSY.get(status, "in a state this version does not back up")
    raise UnsupportedError(
        f"VM {vm} cannot be backed up now: it is {why} (QEMU status {status}); "
        "back it up once it runs or is paused"
    )


def stopped_note(vm: str, stopped: str, agent: bool) -> str:
    """What a backup of a stopped guest says about its consistency (a warning when an agent is
    declared: the copy is not the application-consistent one it would make)."""
    about_agent = "; its guest agent cannot answer while the guest does not run" if agent else ""
    return (
        f"VM {vm} is {stopped}: the copy is crash-consistent, the disks as they were when the guest "
        f"stopped{about_agent}"
    )
