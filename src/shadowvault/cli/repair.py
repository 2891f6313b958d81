"""CLI commands: repair index, repair packs, repair snapshots, repair config (parse, call, print)."""

from __future__ import annotations

import dataclasses

import click

from shadowvault.cli.output import emit, info, json_option
from shadowvault.cli.repo_options import open_repository, read_password, repo_options, repo_path
from shadowvault.repo.repair import repair_index, repair_packs
from shadowvault.repo.repair_snapshots import repair_snapshots
from shadowvault.repo.repository import Repository


@click.group("repair")
def repair_group() -> None:
    """Recover from damage: rebuild the index, salvage damaged packs, rewrite damaged snapshots.

    The order after damage: `check --read-data`, `repair index` (if index files are damaged or
    lost), `repair packs`, a backup (it stores again what the sources still have), `repair
    snapshots`, `check`. docs/repository.md, "Damage and repair", explains each step."""


@repair_group.command("index")
@repo_options
@click.option("--read-all-packs", is_flag=True, help="Read every pack's header, not only unknown ones.")
@json_option
def repair_index_cmd(
    repo: str | None, password_file: str | None, read_all_packs: bool, as_json: bool
) -> None:
    """Rebuild the index from the packs' own headers."""
    with open_repository(repo, password_file, write=True, kind="repair") as r:
        result = repair_index(r, read_all_packs=read_all_packs)
    emit(
        as_json,
        {"message_type": "summary", **dataclasses.asdict(result), "summary": result.summary()},
        lambda: info(result.summary()),
    )


@repair_group.command("packs")
@repo_options
@click.argument("pack_ids", nargs=-1)
@json_option
def repair_packs_cmd(
    repo: str | None, password_file: str | None, pack_ids: tuple[str, ...], as_json: bool
) -> None:
    """Salvage damaged packs (PACK_IDS, or those `check` found damaged) and drop what is lost."""
    with open_repository(repo, password_file, write=True, kind="repair") as r:
        result = repair_packs(r, list(pack_ids) or None)
    emit(
        as_json,
        {"message_type": "summary", **dataclasses.asdict(result), "summary": result.summary()},
        lambda: info(result.summary()),
    )


@repair_group.command("snapshots")
@repo_options
@click.argument("snapshot_ids", nargs=-1)
@click.option("--forget", is_flag=True, help="Remove each original once its repaired copy is saved.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be repaired.")
@json_option
def repair_snapshots_cmd(
    repo: str | None,
    password_file: str | None,
    snapshot_ids: tuple[str, ...],
    forget: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Write copies of snapshots that reference lost data, with the losses marked."""
    with open_repository(repo, password_file, write=True, kind="repair") as r:
        result = repair_snapshots(r, list(snapshot_ids) or None, forget=forget, dry_run=dry_run)

    def human() -> None:
        for item in result.repaired:
            target = item.repaired[:8] if item.repaired else "(dry run)"
            info(f"snapshot {item.original[:8]} -> {target}: {len(item.lost)} entries lost")
            for line in item.lost[:20]:
                info(f"  {line}")
            if len(item.lost) > 20:
                info(f"  ... and {len(item.lost) - 20} more")
        info(result.summary())

    emit(
        as_json, {"message_type": "summary", **dataclasses.asdict(result), "summary": result.summary()}, human
    )


@repair_group.command("config")
@repo_options
@json_option
def repair_config_cmd(repo: str | None, password_file: str | None, as_json: bool) -> None:
    """Write a new config when the old one is damaged (snapshots stay restorable)."""
    path = repo_path(repo)
    config = Repository.repair_config(path, read_password(password_file))
    if config is None:
        emit(
            as_json,
            {"message_type": "summary", "repaired": False},
            lambda: info("the config is intact; nothing to repair"),
        )
        return
    emit(
        as_json,
        {"message_type": "summary", "repaired": True, "id": config.id},
        lambda: info(
            f"wrote a new config (repository id {config.id[:8]}); the next backup stores its data again"
        ),
    )
