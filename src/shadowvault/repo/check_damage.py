"""What check makes of the damage it finds: the blobs left without an intact copy, the snapshots
that reference them, and the damage records it saves or clears (repo/damage.py)."""

from __future__ import annotations

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.check_packs import Listed
from shadowvault.repo.check_report import CheckReport
from shadowvault.repo.damage import DamagedPack, DamageMap
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot


def without_intact_copy(
    repo: Repository, packs: dict[str, Listed], found: DamageMap, report: CheckReport
) -> dict[bytes, str]:
    """Blob id -> what is wrong, for the blobs whose every indexed copy is damaged (by this run's
    findings or earlier records); a damaged copy with an intact one elsewhere is only a warning.
    The blobs of the damaged packs are looked at, each copy found through the compact index (a
    map of every blob to its packs cost ~110 B per blob)."""

    def damaged(pack_id: str, blob_id: bytes) -> bool:
        return found.is_damaged(pack_id, blob_id) or repo.damage.is_damaged(pack_id, blob_id)

    suspects: dict[bytes, list[str]] = {}  # blob id -> the packs with a damaged copy
    with_damage = (found.packs() | repo.damage.packs()) & packs.keys()
    for pack_id, blob_ids in repo.index.blobs_in(with_damage).items():
        for blob_id in dict.fromkeys(blob_ids):  # a pack listed twice lists its blobs twice
            if damaged(pack_id, blob_id):
                suspects.setdefault(blob_id, []).append(pack_id)
    bad: dict[bytes, str] = {}
    superseded = 0
    for blob_id, broken_in in suspects.items():
        indexed = [loc.pack for loc in repo.index.locations(blob_id) if loc.pack in packs]
        holders = list(dict.fromkeys([*indexed, *broken_in]))
        broken = [p for p in holders if damaged(p, blob_id)]
        if len(broken) == len(holders):
            reason = found.whole.get(broken[0]) or found.copies.get(blob_id, {}).get(broken[0])
            bad[blob_id] = reason or f"blob {blob_id.hex()[:16]} is damaged in pack {broken[0][:16]}"
        else:
            superseded += 1
    if superseded:
        report.warnings.append(
            f"{superseded} damaged blob copies have intact copies elsewhere (a later backup stored them"
            " again); `shadowvault repair packs` or prune removes the damaged packs"
        )
    return bad


def recorded_earlier(
    repo: Repository, packs: dict[str, Listed], found: DamageMap, intact: set[str], report: CheckReport
) -> list[str]:
    """Report the damage earlier checks and reads recorded for packs still indexed (what this run
    found again is reported already); returns the packs this run read back intact (mended)."""
    mended: list[str] = []
    for earlier in repo.damage.records(keep=packs):
        if earlier.id in found.whole:
            continue  # found again by this run
        if earlier.id in intact:
            mended.append(earlier.id)  # read back whole and intact: a good copy was put back
            continue
        outside = not earlier.whole and not earlier.blobs  # header or trailer, every blob usable
        blobs = [b for b in earlier.blobs if not found.is_damaged(earlier.id, b)]
        if (outside and earlier.id in found.headers) or (not outside and not earlier.whole and not blobs):
            continue
        what = "is damaged" if earlier.whole or outside else f"has {len(blobs)} damaged blobs"
        report.errors.append(
            f"pack {earlier.id[:16]} {what} (recorded earlier: {earlier.reason}); `shadowvault repair"
            " packs` salvages what is readable (a good copy of the file put back: `check --read-data`"
            " clears the record)"
        )
    return mended


def record_found(repo: Repository, report: CheckReport, records: list[DamagedPack]) -> None:
    """Save what was found for backups and prune; a read-only repository only loses the memo."""
    try:
        repo.record_damage(records)
    except ShadowvaultError as err:
        report.warnings.append(f"could not record the damage found ({err}); backups may reuse it")


def clear_mended(repo: Repository, report: CheckReport, mended: list[str], record: bool) -> None:
    """Forget the damage recorded for packs this run read back intact (in the repository too,
    with `record`), so that backups and prune use their blobs again."""
    shown = ", ".join(pack_id[:16] for pack_id in mended[:5]) + (" ..." if len(mended) > 5 else "")
    if not record:
        repo.damage.forget(mended)
        report.warnings.append(f"packs recorded as damaged read back intact: {shown}")
        return
    try:
        repo.clear_damage(mended)
    except ShadowvaultError as err:
        report.warnings.append(f"packs recorded as damaged read back intact ({shown}); recorded still: {err}")
        return
    report.warnings.append(f"packs recorded as damaged read back intact, their records cleared: {shown}")


def attribute_to_snapshots(
    repo: Repository,
    snapshots: list[tuple[str, Snapshot]],
    bad: dict[bytes, str],
    report: CheckReport,
    flagged: dict[bytes, str] | None = None,
) -> None:
    """Name the snapshots that reference a bad blob or a `flagged` tree (readable, but with a
    problem of its own: an unsafe name), each tree's verdict computed once."""
    flagged = flagged or {}
    verdict: dict[bytes, list[str]] = {}  # tree id -> problems below it (capped)

    def problems_of(root: bytes) -> list[str]:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        children: dict[bytes, tuple[list[str], list[bytes]]] = {}
        while stack:
            tree_id, expanded = stack.pop()
            if tree_id in verdict:
                continue
            if not expanded:
                if tree_id in bad:
                    verdict[tree_id] = [bad[tree_id]]
                    continue
                try:
                    tree = repo.load_tree(tree_id)
                except ShadowvaultError as err:
                    verdict[tree_id] = [f"tree {tree_id.hex()[:16]} cannot be read: {err}"]
                    continue
                own = [flagged[tree_id]] if tree_id in flagged else []
                own += [bad[c] for node in tree.nodes for c in node.content if c in bad]
                subs = [node.subtree for node in tree.nodes if node.subtree is not None]
                children[tree_id] = (own, subs)
                stack.append((tree_id, True))
                stack.extend((s, False) for s in subs if s not in verdict)
            else:
                own, subs = children.pop(tree_id)
                found = list(own)
                for s in subs:
                    found.extend(verdict.get(s, []))
                verdict[tree_id] = list(dict.fromkeys(found))[:20]
        return verdict[root]

    for sid, snap in snapshots:
        found = problems_of(snap.tree) if snap.tree else []
        if snap.manifest and snap.manifest in bad:
            found = [*found, bad[snap.manifest]]
        if found:
            report.affected_snapshots.setdefault(sid, []).extend(found)
