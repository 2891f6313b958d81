"""Whether a shadow set is one instant across its volumes, and the set saying so when it is not.

Each provider's image is of one instant, but only a filesystem freeze held over every volume while
all commit makes the set one instant across them (VSS's shadow copy set). btrfs and lvm cannot be
combined with fsfreeze, so their volumes are shadowed one after another: the manifest must say so.
"""

from __future__ import annotations

from shadowvault.shadow.coordinator import SetOptions, shadow_set
from tests.fixtures.loopfs import loop_filesystem

ONE_AFTER_ANOTHER = "shadowed one after another"


def test_a_set_of_volumes_snapshotted_one_after_another_says_so_and_a_single_volume_does_not(btrfs):
    with (
        loop_filesystem("btrfs") as second,
        shadow_set([str(btrfs.mount), str(second.mount)], SetOptions(provider="btrfs")) as manifest,
    ):
        assert len(manifest.shadows) == 2
        notes = [n for n in manifest.notes if ONE_AFTER_ANOTHER in n]
        assert len(notes) == 1, manifest.notes
        assert str(btrfs.mount) in notes[0] and str(second.mount) in notes[0]
    with shadow_set([str(btrfs.mount)], SetOptions(provider="btrfs")) as single:
        assert not [n for n in single.notes if ONE_AFTER_ANOTHER in n], single.notes
