"""restic 0.14's `find --blob/--tree/--pack/--show-pack-id`: from an id that `check` or `cat` showed
back to the files and directories that use it, typed as a restic user types it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.inprocess_cli import Shadowvault, one_error_line


def matches(sv: Shadowvault, *args: object) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in sv.ok("find", "--json", *args).splitlines()]
    assert lines[-1]["message_type"] == "summary"
    return [line for line in lines if line["message_type"] == "match"]


def nodes(sv: Shadowvault, tree: str) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in json.loads(sv.ok("cat", "tree", tree))["nodes"]}


def test_find_by_blob_tree_and_pack_id(sv: Shadowvault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a").write_bytes(b"alpha")
    (src / "d" / "b").write_bytes(b"beta")
    (src / "d" / "same").write_bytes(b"alpha")  # the same blob as a
    for n in range(20):  # enough blobs that some share a first hex digit
        (src / f"n{n}").write_text(f"file {n}")
    sv.ok("backup", "--provider", "none", "-q", src)
    (snapshot,) = json.loads(sv.ok("snapshots", "--json"))
    tree = snapshot["tree"]
    for part in src.parts[1:]:  # down to src, as `cat tree` shows a user
        tree = nodes(sv, tree)[part]["subtree"]
    entries = nodes(sv, tree)
    alpha, beta = entries["a"]["content"][0], nodes(sv, entries["d"]["subtree"])["b"]["content"][0]

    found = matches(sv, "--blob", alpha[:12])  # a prefix, as restic takes
    assert sorted(m["path"] for m in found) == [f"{src}/a", f"{src}/d/same"]
    assert {(m["object_type"], m["id"], m["snapshot_id"]) for m in found} == {("blob", alpha, snapshot["id"])}
    assert {m["parent_tree"] for m in found if m["path"] == f"{src}/a"} == {tree}

    (directory,) = matches(sv, "--tree", entries["d"]["subtree"])
    assert [directory[k] for k in ("path", "object_type", "parent_tree")] == [f"{src}/d", "tree", tree]

    (with_pack, _) = matches(sv, "--blob", alpha, "--show-pack-id")
    pack = with_pack["pack_id"]
    blobs = json.loads(sv.ok("cat", "pack", pack))["blobs"]
    assert {alpha, beta} <= {b["id"] for b in blobs}
    human = sv.ok("find", "--blob", beta[:8], "--show-pack-id")
    assert human.splitlines() == [human.splitlines()[0]]
    assert f"{src}/d/b  blob {beta[:8]}  pack {pack[:8]}" in human

    in_pack = {m["path"] for m in matches(sv, "--pack", pack[:10])}  # every file a blob of it holds
    assert {f"{src}/a", f"{src}/d/b", f"{src}/d/same"} | {f"{src}/n{n}" for n in range(20)} <= in_pack

    # ids are hostile input: one error line each, usage errors exit 2, what is not there exit 1
    for wrong in ("zz", "../../etc", alpha + "0", ""):
        done = sv("find", "--blob", wrong)
        assert done.exit_code == 2 and "is not a data blob id" in one_error_line(done), wrong
    data_ids = [b["id"] for b in blobs if b["type"] == "data"]
    shared = next(d for d in "0123456789abcdef" if sum(i.startswith(d) for i in data_ids) > 1)
    done = sv("find", "--blob", shared)
    assert done.exit_code == 2 and f"prefix {shared} is ambiguous" in one_error_line(done)
    done = sv("find", "--tree", alpha[:10])  # a data blob is no tree
    assert done.exit_code == 1 and "no tree in the index" in one_error_line(done)
    done = sv("find", "--pack", "f" * 64 if not pack.startswith("f") else "0" * 64)
    assert done.exit_code == 1 and "no indexed pack" in one_error_line(done)
    for pair in (("--blob", "--tree"), ("--show-pack-id",), ("--blob", "-i")):
        assert sv("find", *pair, alpha).exit_code == 2
