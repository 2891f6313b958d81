"""`restore --component` and `restore --writer` run in the daemon when one answers, and print the same.

Each restore runs twice, through the daemon and with --no-daemon, into its own target; the restored
files must be there both times and the output must be the same text once what differs by nature
(snapshot ids, run times) is masked. The daemon's run list shows the restores it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shadowvault.client import Client
from tests.components.roots import make_root
from tests.components.test_files import _server
from tests.service.daemon import running_daemon
from tests.service.test_cli_through_daemon import _masked
from tests.writers.test_restore_cli import RESTORE_WRITER


def _backup(cli, env, *args) -> str:
    done = cli("backup", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return next(m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "summary")[
        "snapshot_id"
    ]


def test_component_and_writer_restores_run_in_the_daemon_and_print_the_same(
    cli, env, btrfs, tmp_path: Path, private_dirs: Path
) -> None:
    source = _server(tmp_path)
    files_snap = _backup(cli, env, "--component", "files", "--source-root", str(source), "/srv/data")
    app, log = btrfs.mount / "app", tmp_path / "restore.log"  # a writer needs a shadow set
    app.mkdir()
    (app / "data.txt").write_text("v1\n")
    script = tmp_path / "restore_writer.py"
    script.write_text("from shadowvault import writer_sdk as sdk\n" + RESTORE_WRITER + "\nsdk.run(W)\n")
    script.chmod(0o755)
    config = private_dirs / "config" / "writers.d" / "app.toml"
    config.write_text(
        f'type = "external"\ncommand = ["{sys.executable}", "{script}"]\npaths = ["{app}"]\n'
        f'[options]\ndata = ["{app}"]\nmethod = "restore_to_alternate_location"\nlog = "{log}"\n'
    )
    config.chmod(0o644)
    writer_snap = _backup(cli, env, "--writer", "app", str(app))
    in_process = {**env}
    del in_process["SHADOWVAULT_NO_DAEMON"]
    outputs: dict[str, list[str]] = {}
    with running_daemon() as daemon:
        through = {**in_process, "SHADOWVAULT_SOCKET": str(daemon.socket)}
        for mode, flags in (("daemon", []), ("in-process", ["--no-daemon"])):
            root = make_root(tmp_path / f"root-{mode}")
            component = ["restore", files_snap, "--component", "files", "--target-root", str(root)]
            planned = cli(*flags, *component, "--dry-run", env=through)
            done = cli(*flags, *component, env=through)
            assert done.returncode == 0, done.stderr
            assert (root / "srv/data/site/index.html").read_text() == "<h1>hi</h1>\n"
            elsewhere = tmp_path / f"elsewhere-{mode}"
            writer = ["restore", writer_snap, "--writers", "--target-root", str(elsewhere)]
            restored = cli(*flags, *writer, env=through)
            assert restored.returncode == 0, restored.stderr
            assert (elsewhere / str(app).lstrip("/") / "data.txt").read_text() == "v1\n"
            as_json = cli(*flags, *writer, "--dry-run", "--json", env=through)
            refused = cli(*flags, "restore", writer_snap, "--writers", env=through)  # not in place
            quiet = cli(*flags, "-q", *writer, "--dry-run", env=through)  # the plan was asked for: shown
            assert "external:app" in quiet.stdout, quiet.stdout
            outputs[mode] = [
                _masked(text.replace(mode, "<mode>"))
                for run in (planned, done, restored, as_json, refused, quiet)
                for text in (run.stdout, run.stderr, str(run.returncode))
            ]
        with Client(daemon.socket) as client:
            kinds = [r["description"].split(" of ")[0] for r in client.runs()]
    assert outputs["daemon"] == outputs["in-process"]
    assert kinds == ["restore"] * 6
    events = [json.loads(line)[:2] for line in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["pre_restore", "post_restore"] * 2  # once in each mode
