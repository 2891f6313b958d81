"""The lvm provider's parts that need no device-mapper, on this host: its setting and its refusals.

The snapshots themselves are tested in the guest lab (test_lvm_provider.py).
"""

from __future__ import annotations

import pytest

from shadowvault.errors import ConfigError, UnsupportedError
from shadowvault.shadow.providers.lvm import LvmProvider
from shadowvault.shadow.providers.lvm_planning import snapshot_share
from shadowvault.shadow.providers.registry import choose_provider, unsupported_reasons
from shadowvault.shadow.volumes import find_volume


@pytest.mark.parametrize(
    ("text", "share"),
    [("", 0.20), ("[lvm]\nsnapshot_share = 0.5\n", 0.5), ('[lvm]\nsnapshot_share = "35%"\n', 0.35)],
)
def test_snapshot_share_is_read_from_the_lvm_table(private_dirs, text, share):
    (private_dirs / "config" / "shadowvault.toml").write_text(text)
    assert snapshot_share() == pytest.approx(share)


@pytest.mark.parametrize("value", ["0", "1.5", '"120%"', '"lots"', "true"])
def test_a_snapshot_share_out_of_range_is_a_configuration_error(private_dirs, value):
    (private_dirs / "config" / "shadowvault.toml").write_text(f"[lvm]\nsnapshot_share = {value}\n")
    with pytest.raises(ConfigError, match=r"\[lvm\] snapshot_share must be"):
        snapshot_share()


def test_a_filesystem_on_a_loop_device_is_not_lvms_and_says_why(ext4):
    volume = find_volume(str(ext4.mount))
    assert "not on an LVM logical volume" in unsupported_reasons(volume)["lvm"]
    with pytest.raises(UnsupportedError, match="not on an LVM logical volume"):
        choose_provider(volume, "lvm")
    assert LvmProvider().found_images(volume) == []
