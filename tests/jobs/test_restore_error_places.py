"""A component or writer restore names the files it could not lay down by their places in the target,
as a files restore does (tests/archive/test_restore_places.py): the text says the place, and under
--json an `error` line carries the snapshot's `path` and the `target` place. The same in process and
through the daemon.

The component restore meets a damaged blob (its file is not restored); so does the writer restore,
which fails the writer before its post_restore. (A directory in the way of a component's file no
longer happens: what is in the target is set aside before a writer's files are laid down.)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from shadowvault.archive.restore import find_node
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD
from tests.archive.test_honest_output import all_json, of_type
from tests.components.test_files import _server
from tests.service.daemon import running_daemon
from tests.writers.test_restore_cli import RESTORE_WRITER


def damage_blob(repository: str, path: str) -> None:
    """Flip a byte in the middle of the first blob of the file `path` of the latest snapshot."""
    with Repository.open(repository, PASSWORD) as repo:
        _, snapshot = repo.find_snapshot("latest")
        node = find_node(repo, snapshot.tree, path)
        location = repo.lookup(node.content[0])
    pack = Path(repository) / pack_name(location.pack)
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(location.offset + location.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


@contextlib.contextmanager
def modes(env: dict[str, str]) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """(name, environment) of a restore in process and of one through a running daemon."""
    with running_daemon() as daemon:
        through = {k: v for k, v in env.items() if k != "SHADOWVAULT_NO_DAEMON"}
        yield [("in-process", env), ("daemon", {**through, "SHADOWVAULT_SOCKET": str(daemon.socket)})]


def test_a_component_restore_names_a_file_it_could_not_restore_by_its_place(cli, env, tmp_path: Path):
    source = _server(tmp_path)
    done = cli("backup", "--component", "files", "--source-root", source, "/srv/data", env=env)
    assert done.returncode == 0, done.stderr
    damage_blob(env["SHADOWVAULT_REPOSITORY"], "/srv/data/app.db")
    with modes(env) as ways:
        for mode, mode_env in ways:
            root = tmp_path / f"root-{mode}"
            (root / "etc").mkdir(parents=True)
            restore = ["restore", "latest", "--component", "files", "--target-root", root]
            restore += ["--map", "/srv/data=/srv/moved"]
            done = cli(*restore, "--json", env=mode_env)
            assert done.returncode == 3, (mode, done.stderr)
            (error,) = of_type(all_json(done.stderr), "error")
            place = f"{root}/srv/moved/app.db"  # where the map puts it: what the user looks at
            assert (error["path"], error["target"]) == ("/srv/data/app.db", place), mode
            assert "not restored" in error["message"] or "blob" in error["message"], error
            assert (root / "srv/moved/site/index.html").read_text() == "<h1>hi</h1>\n"
            assert not (root / "srv/moved/app.db").exists()
            text = cli(*restore, env=mode_env)
            assert text.returncode == 3, text.stderr
            said = [
                line
                for line in text.stderr.splitlines()
                if line.startswith(f"shadowvault: warning: {place}: ")
            ]
            assert len(said) == 1 and error["message"] in said[0], text.stderr
            assert "/srv/data/app.db" not in text.stderr and "Traceback" not in text.stderr


def test_a_writer_restore_names_a_file_it_could_not_restore_by_its_place(
    cli, env, btrfs, tmp_path: Path, private_dirs: Path
):
    app, log = btrfs.mount / "app", tmp_path / "restore.log"  # a writer needs a shadow set
    app.mkdir()
    (app / "data.txt").write_text("v1\n")
    (app / "other.txt").write_text("other\n")
    script = tmp_path / "restore_writer.py"
    script.write_text("from shadowvault import writer_sdk as sdk\n" + RESTORE_WRITER + "\nsdk.run(W)\n")
    script.chmod(0o755)
    config = private_dirs / "config" / "writers.d" / "app.toml"
    config.write_text(
        f'type = "external"\ncommand = ["{sys.executable}", "{script}"]\npaths = ["{app}"]\n'
        f'[options]\ndata = ["{app}"]\nmethod = "restore_to_alternate_location"\nlog = "{log}"\n'
    )
    config.chmod(0o644)
    done = cli("backup", "--writer", "app", app, env=env)
    assert done.returncode == 0, done.stderr
    damage_blob(env["SHADOWVAULT_REPOSITORY"], f"{app}/data.txt")
    with modes(env) as ways:
        for mode, mode_env in ways:
            elsewhere = tmp_path / f"elsewhere-{mode}"
            place = elsewhere / str(app).lstrip("/") / "data.txt"
            restore = ["restore", "latest", "--writers", "--target-root", elsewhere]
            done = cli(*restore, "--json", env=mode_env)
            assert done.returncode == 1, (mode, done.stderr)
            messages = all_json(done.stderr)
            (error,) = of_type(messages, "error")
            assert (error["path"], error["target"]) == (f"{app}/data.txt", str(place)), mode
            why = error["message"]
            (failed,) = of_type(messages, "exit_error")
            assert f"1 file not restored, first {place}: {why}" in failed["message"], failed
            assert (place.parent / "other.txt").read_text() == "other\n" and not place.exists()
            text = cli(*restore, env=mode_env)  # what the first left is set aside, the same file fails
            assert text.returncode == 1, text.stderr
            lines = text.stderr.splitlines()
            assert f"shadowvault: warning: {place}: {why}" in lines, text.stderr
            assert lines[-1].startswith("shadowvault: error: writer external:app: 1 file not restored, first "
                                        f"{place}: "), text.stderr  # fmt: skip
            assert "Traceback" not in text.stderr
    events = [json.loads(line)[0] for line in log.read_text().splitlines()]
    assert events == ["pre_restore"] * 4  # never post_restore over a partial copy
