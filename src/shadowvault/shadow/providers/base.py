"""The provider interface: what the coordinator needs from anything that makes a shadow of a volume."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, NamedTuple

from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.volumes import Volume

SHADOW_DIR_NAME = ".shadowvault"  # hidden directory at a volume's root that holds its shadows
# How image-making providers name a shadow in that directory: `<set id>-<index>`, the set id as the
# store makes it (`20261125T140312-3f9a1c`). Only names of exactly this form are ever reaped as orphans.
IMAGE_NAME = re.compile(r"^(?P<set_id>[0-9]{8}T[0-9]{6}-[0-9a-f]{6})-(?P<index>[0-9]{1,4})$")


def image_name(set_id: str, index: int) -> str:
    """The name of shadow `index` of set `set_id` in a volume's shadow directory."""
    return f"{set_id}-{index}"


@dataclass(frozen=True)
class ReadScope:
    """What the requester will read of the set's volumes, so that a provider may leave the rest out of
    what it makes beside the volume's image (the btrfs provider's snapshots of nested subvolumes:
    hundreds of them on a machine with docker's or snapper's, for a backup of one directory).

    paths: absolute paths read, on any of the set's volumes; none (`shadows create`, `exec`): every
    volume is read whole, and so is a volume that none of them touches
    left_out: absolute paths below them that are not read (other tools' snapshots, excluded paths)
    """

    paths: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


WHOLE_VOLUMES = ReadScope()


class FoundImage(NamedTuple):
    """An image found on a volume in a provider's own place, and the set its name says it belongs to."""

    set_id: str
    shadow: Shadow


class FreezePolicy(StrEnum):
    """Whether a provider needs the filesystem frozen while it commits.

    A btrfs snapshot or a reflink on a frozen filesystem blocks until thaw, so
    those providers forbid fsfreeze; a block-level provider would need it. BUILT_IN: the provider
    freezes the filesystem itself while it commits (LVM suspends the device, which freezes it), so
    an fsfreeze around it is redundant, and refused (LVM cannot suspend a filesystem frozen by another).
    """

    NEEDS = "needs"
    FORBIDS = "forbids"
    IGNORES = "ignores"
    BUILT_IN = "built_in"


class Provider(ABC):
    """Makes and deletes read-only point-in-time images of volumes.

    `create` is the commit of VSS: it runs while writers hold their applications and must be quick
    (the coordinator enforces a hard limit). A provider knows volumes and nothing else.
    """

    name: ClassVar[str]
    """What users call the provider (`--provider btrfs`) and the manifest records for each shadow."""

    atomic: ClassVar[bool] = False
    """Every file of the volume is captured at one instant (a btrfs snapshot); a copy taken file by
    file is not, and the grades and notes of the set say so."""

    freeze_policy: ClassVar[FreezePolicy] = FreezePolicy.IGNORES
    """Whether its commit needs, forbids or ignores fsfreeze on the volume (the coordinator refuses
    fsfreeze with a provider that forbids it)."""

    priority: ClassVar[int] = 0
    """Higher wins when `auto` picks among the providers that support a volume."""

    @abstractmethod
    def unsupported_reason(self, volume: Volume) -> str | None:
        """None when this provider can shadow `volume`, else a sentence saying why not."""

    def is_supported(self, volume: Volume) -> bool:
        return self.unsupported_reason(volume) is None

    @abstractmethod
    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        """Commit: make the image of `volume` for shadow set `set_id` and say where to read it.

        The image holds at least what `scope` says the requester reads of the volume; a provider whose
        image is the whole volume in one piece ignores it."""

    @abstractmethod
    def delete(self, shadow: Shadow) -> None:
        """Remove the image; deleting one that is already gone is not an error."""

    def can_create_together(self, volumes: Sequence[Volume]) -> bool:
        """Whether `create_together` can make the images of all of `volumes` at one instant (asked at
        commit, before any of them is made; False: they are made one after another by `create`)."""
        return False

    def create_together(
        self, volumes: Sequence[Volume], set_id: str, indices: Sequence[int], limit: float
    ) -> list[Shadow]:
        """Commit several volumes at one instant (see can_create_together), within about `limit` s.

        On failure it removes whatever it made and raises; nothing it froze stays frozen.
        """
        raise NotImplementedError(f"provider {self.name} shadows one volume at a time")

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow | None:
        """The shadow `create` would make, before it exists: what the store records as the set's intent.

        `delete` of the returned shadow must remove whatever `create` left, whole or half made, and be
        harmless when nothing was made. None: this provider makes no image (nothing can be left over).
        """
        return None

    def found_images(self, volume: Volume) -> list[FoundImage]:
        """The images of this provider on `volume`, found by their place and name (for orphan reaping).

        Only what sits in the provider's own directory under its own naming is returned, never
        anything else on the volume.
        """
        return []

    def found_images_on(self, volumes: Sequence[Volume]) -> list[FoundImage]:
        """`found_images` of every one of `volumes`, asked at once: a provider that lists all its
        images in one query (lvm: one `lvs`) answers a reap of many volumes with one."""
        return [image for volume in volumes for image in self.found_images(volume)]

    def passed_over(self, volume: Volume) -> str | None:
        """Why this provider cannot shadow `volume` now although the volume is of its kind (a logical
        volume in a full volume group), for the notes of a set that a lesser provider served; None
        when it can, or when the volume is not its kind at all (nothing worth saying then)."""
        return None

    def problem(self, shadow: Shadow) -> str | None:
        """None while the image still holds its point in time, else why not, in words for the user.

        Asked after a requester has read a shadow: a classic LVM snapshot that overflowed keeps
        serving cached pages, so what was read must be thrown away. Providers whose images cannot
        go bad say None. Raise ShadowUncheckedError when the question cannot be answered now (a
        failing `lvs`): a read is not kept, but the shadow is not marked bad for good.
        """
        return None

    def problems(self, shadows: Sequence[Shadow]) -> list[str | None]:
        """`problem` of each of `shadows`, in order, asked at once: a provider that reads the state of
        all its images in one query (lvm: one `lvs`, which scans every device) answers a listing of
        many shadows with one. ShadowUncheckedError: it cannot tell now, for any of them."""
        return [self.problem(shadow) for shadow in shadows]

    def cancel(self) -> None:
        """Ask a `create` running in another thread on this instance to stop and clean up after itself.

        For the coordinator when a commit passes its hard limit. Providers whose commit is one quick
        call (btrfs, live) have nothing to stop; the reflink copy stops within a few files.
        """
