"""Which kernels let the lvm provider take a set's snapshots inside one freeze (read from `uname -r`).

Trying it is no test: on a kernel before 6.8 the attempt leaves a half-made snapshot behind. The
freeze itself is tested in the guest lab (test_lvm_provider.py), on Debian's 6.12.
"""

from __future__ import annotations

import pytest

from shadowvault.shadow.providers.lvm_freeze import kernel_nests_freezes


@pytest.mark.parametrize(
    ("release", "nests"),
    [
        ("6.1.0-56-amd64", False),
        ("5.15.0-91-generic", False),
        ("6.7.12", False),
        ("6.8.0-31-generic", True),
        ("6.12.117+deb12-amd64", True),
        ("7.0.1", True),
        ("unknown", False),
    ],
)
def test_a_freeze_nests_from_linux_6_8_on(release: str, nests: bool):
    assert kernel_nests_freezes(release) is nests
