"""What the lvm provider's guest-lab modules share: a volume group on the guest's disk, fresh logical
volumes with a filesystem, `[lvm] snapshot_share` in the guest's configuration, and small checks
a user would make (`lvs`, `mountpoint`).
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.archive.helpers import FAST_KDF
from tests.fixtures.guest_lab import GuestLab

VG = "svtest"
SLOW = ("--commit-timeout", "120")  # an emulated machine: an lvcreate takes seconds, not milliseconds
_names = itertools.count()


@contextmanager
def volume_group(lab: GuestLab) -> Iterator[str]:
    """Volume group VG on the guest's disk `pv`, with a 512 MiB thin pool `pool`; removed after the
    block (what is still mounted from it first), so the next module sharing the guest finds the
    disk blank."""
    disk = lab.disk("pv")
    lab.check(f"pvcreate -q {disk} && vgcreate -q {VG} {disk}")
    lab.check(f"lvcreate -q --type thin-pool -L 512M -n pool {VG}")
    try:
        yield VG
    finally:
        left = f"$(awk '$1 ~ \"^/dev/mapper/{VG}-\" {{print $2}}' /proc/mounts)"
        lab.run(
            f"for m in {left}; do umount -l $m; done; vgremove -qff {VG}; pvremove -qff {disk}", timeout=180
        )


@contextmanager
def lvm_volume(lab: GuestLab, vg: str, fstype: str, kind: str) -> Iterator[str]:
    """A fresh logical volume (classic: plain LV; thin: in the pool) with `fstype`, mounted; removed after."""
    name = f"{fstype}{kind}{next(_names)}"
    size = "320M" if fstype == "xfs" else "128M"
    create = f"-L {size} -n {name} {vg}" if kind == "classic" else f"-V {size} --thin -n {name} {vg}/pool"
    mkfs = "mkfs.xfs -q -f" if fstype == "xfs" else "mkfs.ext4 -q"
    mount = f"/mnt/{name}"
    device = f"/dev/{vg}/{name}"
    lab.check(f"lvcreate -q -y -Wy {create} && {mkfs} {device} && mkdir -p {mount} && mount {device} {mount}")
    try:
        yield mount
    finally:
        lab.run(f"umount -R {mount}; lvremove -qy {vg}/{name}; rmdir {mount}")


@contextmanager
def lvm_configured(lab: GuestLab) -> Iterator[Callable[[str], None]]:
    """Sets `[lvm] snapshot_share` in the guest's shadowvault.toml; the configuration goes after."""

    def share(value: str) -> None:
        config = f"[lvm]\nsnapshot_share = {value}\n"
        lab.check(
            "mkdir -p /etc/shadowvault/writers.d; cat > /etc/shadowvault/shadowvault.toml", input=config
        )

    try:
        yield share
    finally:
        lab.run("rm -rf /etc/shadowvault /usr/local/sbin/sv-* /tmp/repo")


def install_script_writer(lab: GuestLab, name: str, mount: str, **hooks: str) -> None:
    """A script writer of `mount` in writers.d whose hooks (freeze=, thaw=) run the given shell lines
    (as root-owned scripts in /usr/local/sbin, which lvm_configured removes)."""
    commands = []
    for hook, script in hooks.items():
        path = f"/usr/local/sbin/sv-{name}-{hook}"
        lab.check(f"cat > {path} && chmod 755 {path}", input=f"#!/bin/sh\n{script}\n")
        commands.append(f'{hook} = ["{path}"]')
    config = 'type = "script"\n' + "\n".join(commands) + f'\npaths = ["{mount}"]\n'
    lab.check(
        f"mkdir -p /etc/shadowvault/writers.d && cat > /etc/shadowvault/writers.d/{name}.toml", input=config
    )


# scrypt with the tests' fast parameters: the default ones take seconds at every opening under emulation
INIT_FAST = (
    "import sys; from shadowvault.repo.repository import Repository; "
    f"Repository.init(sys.argv[1], sys.argv[2], kdf_params={FAST_KDF!r}).close()"
)


def init_repository(lab: GuestLab, path: str, password: str) -> None:
    """A repository at `path` in the guest, as `init` makes it but with a key that opens fast (the
    host's tests cover `init` itself)."""
    lab.check(shlex.join(["python3", "-c", INIT_FAST, path, password]))


def wait_for(lab: GuestLab, condition: str, timeout: float = 120) -> None:
    """Poll a shell condition in the guest (no timing is asserted: the limit only bounds a hang).
    Every round starts programs, ~0.15 s of emulated CPU each: half a second apart."""
    lab.check(f"until {condition}; do sleep 0.5; done", timeout=timeout)


def snapshot_lvs(lab: GuestLab, vg: str) -> list[str]:
    out = lab.check(f"lvs --noheadings -o lv_name {vg}").stdout
    return [name.strip() for name in out.split() if name.strip().startswith("sv-")]


def mounted(lab: GuestLab, path: str) -> bool:
    return lab.run(f"mountpoint -q {shlex.quote(path)}").returncode == 0


def created_set(result_json: str) -> dict:
    return json.loads(result_json)


def overwrite_command(mount: str) -> str:
    """A shell command that rewrites 48 MiB of `mount`: more than a classic snapshot with a tiny share
    has room for. Zeros do it as well as random bytes (every chunk written is copied aside), at no
    emulated cost (urandom under emulation costs seconds)."""
    return f"dd if=/dev/zero of={mount}/filler bs=1M count=48 conv=fsync 2>/dev/null"


def overflow(lab: GuestLab, mount: str, snapshot: str) -> None:
    """Rewrite more of `mount` than its classic snapshot has room for: the kernel drops it ('I')."""
    lab.check(overwrite_command(mount))
    assert lab.check(f"lvs --noheadings -o lv_attr {snapshot}").stdout.strip()[4] == "I"
