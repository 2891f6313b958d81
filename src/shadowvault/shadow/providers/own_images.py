"""What a shadow's record may name for its provider to delete: only the provider's own images.

A record in the state directory is input (damaged, edited by hand, copied from another machine),
and `delete` runs as root: a record naming `/home` as a reflink copy, a user's subvolume as a btrfs
snapshot, a mounted filesystem as an lvm snapshot's mount or a fanotify view would have it removed or
unmounted. So each provider's `delete` first checks that every path or name it acts on is one its
`create` makes: in its own place (`<volume>/.shadowvault`, `<state dir>/fanotify`) under its own
naming (`<set id>-<index>`), and refuses anything else with ForeignImageError, which the store logs
and drops: what the provider really made sits in its own place, where orphan reaping finds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from shadowvault.errors import ProviderError
from shadowvault.paths_within import is_plain_absolute
from shadowvault.shadow.manifest import Shadow


class ForeignImageError(ProviderError):
    """A shadow's record names something its provider does not make: it is left alone."""


def foreign(shadow: Shadow, value: object) -> ForeignImageError:
    return ForeignImageError(
        f"the record of the {shadow.provider} shadow of {shadow.volume!r} names {value!r}, which "
        f"provider {shadow.provider} did not make: left alone, record dropped"
    )


def own_volume(shadow: Shadow) -> str:
    """The shadow's volume, a plain absolute path (no `..`, no trailing slash); ForeignImageError else."""
    if not is_plain_absolute(shadow.volume):
        raise foreign(shadow, shadow.volume)
    return shadow.volume


def own_image_path(shadow: Shadow, value: object, parent: str, names: Iterable[re.Pattern[str]]) -> str:
    """`value` when it is `<parent>/<name>` with a name one of `names` matches; ForeignImageError else."""
    if is_plain_absolute(value):
        where, name = os.path.split(value)
        if where == parent and any(pattern.match(name) for pattern in names):
            return value
    raise foreign(shadow, value)
