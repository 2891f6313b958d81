"""writers.d programs run as root: only files nobody but root could change run, the file checked is the
file executed, writers get none of the requester's secrets, and a user who is not root is told so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shadowvault.errors import ConfigError
from shadowvault.repo.repository import Repository
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.watchdog import Watchdog
from shadowvault.shadow.writers import registry, trusted_exec
from shadowvault.shadow.writers.base import RunCommand, SnapshotContext
from shadowvault.shadow.writers.external import ExternalWriter
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.tools import require_tools
from tests.fixtures.unprivileged import run_as_nobody
from tests.shadow.test_watchdog import wait_for
from tests.shadow.test_writers import write_config, write_script
from tests.writers.test_external import write_writer

NOBODY = 65534
SECRET_FILE_MARK = "secret-password-file"


def registry_context() -> SnapshotContext:
    return SnapshotContext(set_id="trust", volumes=[])


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("shadowvault: error:"), done.stderr
    return done.stderr


def environment_of(dump: Path) -> dict[str, str]:
    """A dump of `env` (or os.environ), one NAME=value per line, as a dict."""
    pairs = (line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs}


# ---- (a) (b) every directory on the way must be root's ----------------------------------------------


@pytest.mark.parametrize("depth", [0, 2], ids=["parent", "ancestor"])
def test_script_in_a_directory_a_user_owns_is_refused(private_dirs, tmp_path, cli, btrfs, depth):
    """A root-owned 0755 script passes a check of the file alone; its user-owned directory must not."""
    owned = tmp_path / "home-of-nobody"
    where = owned.joinpath(*["sub"] * depth)
    where.mkdir(parents=True)
    os.chown(owned, NOBODY, NOBODY)
    script = write_script(where / "freeze.sh", "true", mode=0o755)
    write_config(private_dirs / "config", "app", f'freeze = ["{script}"]\n')
    expected = rf"^{re.escape(str(owned))}: refused: .*must be owned by root \(it is owned by uid 65534\)"
    with pytest.raises(ConfigError, match=expected):
        registry.make_writer("script:app")
    done = cli("shadows", "create", "--volume", btrfs.mount, "--writer", "script:app")
    assert f"{owned}: refused:" in one_line_error(done)
    assert not (btrfs.mount / ".shadowvault").exists() or not os.listdir(btrfs.mount / ".shadowvault")


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_directory_others_may_write_is_refused(private_dirs, tmp_path, mode):
    shared = tmp_path / "shared"
    (shared / "app").mkdir(parents=True)
    shared.chmod(mode)
    script = write_script(shared / "app" / "freeze.sh", "true", mode=0o755)
    write_config(private_dirs / "config", "app", f'freeze = ["{script}"]\n')
    expected = (
        rf"^{re.escape(str(shared))}: refused: .*not be writable by group or others \(mode {mode:04o}\)"
    )
    with pytest.raises(ConfigError, match=expected):
        registry.make_writer("script:app")


def test_an_argument_file_in_a_directory_a_user_owns_is_refused(private_dirs, tmp_path):
    """`freeze = ["/bin/sh", "/path/freeze.sh"]`: the script the shell reads is checked the same way."""
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, NOBODY, NOBODY)
    script = write_script(owned / "freeze.sh", "true", mode=0o644)
    write_config(private_dirs / "config", "app", f'freeze = ["/bin/sh", "{script}"]\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(owned))}: refused: .*owned by root"):
        registry.make_writer("script:app")


def test_a_root_owned_sticky_directory_is_accepted(private_dirs, tmp_path):
    """Like /tmp: in a sticky directory only an entry's owner may rename it, so root's entry stays root's."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    marker = tmp_path / "ran"
    script = write_script(sticky / "freeze.sh", f"touch {marker}", mode=0o755)
    write_config(private_dirs / "config", "app", f'freeze = ["{script}"]\n')
    writer = registry.make_writer("script:app")
    writer.freeze(registry_context())
    assert marker.exists()


def test_a_symlink_is_followed_only_through_directories_root_owns(private_dirs, tmp_path):
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, NOBODY, NOBODY)
    target = write_script(owned / "real.sh", "true", mode=0o755)
    link = tmp_path / "freeze"
    link.symlink_to(target)
    write_config(private_dirs / "config", "app", f'freeze = ["{link}"]\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(owned))}: refused:"):
        registry.make_writer("script:app")
    link.unlink()
    link.symlink_to("/bin/true")  # a link to a program in root's directories is fine
    registry.make_writer("script:app").freeze(registry_context())


def test_writers_d_in_a_directory_a_user_owns_is_refused(private_dirs, tmp_path):
    script = write_script(tmp_path / "freeze.sh", "true", mode=0o755)
    write_config(private_dirs / "config", "app", f'freeze = ["{script}"]\n')
    os.chown(private_dirs / "config", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(private_dirs / 'config'))}: refused:"):
        registry.configured_writers()


# ---- (c) relative paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["bin/freeze.sh", "./freeze.sh"])
def test_a_relative_program_path_is_refused(private_dirs, program):
    write_config(private_dirs / "config", "app", f'freeze = ["{program}"]\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(program)}.*relative.*absolute path"):
        registry.make_writer("script:app")
    write_config(private_dirs / "config", "ext", f'type = "external"\ncommand = ["{program}"]\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(program)}.*relative.*absolute path"):
        registry.make_writer("ext")


def test_a_program_named_without_a_path_is_found_in_root_owned_directories(private_dirs, tmp_path):
    marker = tmp_path / "ran"
    write_config(private_dirs / "config", "app", f'freeze = ["sh", "-c", "touch {marker}"]\n')
    registry.make_writer("script:app").freeze(registry_context())
    assert marker.exists()


# ---- (d) the file checked is the file executed ----------------------------------------------------


def test_the_program_that_runs_is_the_one_that_was_checked(tmp_path):
    """Swap the checked script for another between check and exec, as an attacker would: the checked runs."""
    out = tmp_path / "out"
    checked = write_script(tmp_path / "freeze.sh", f"echo checked > {out}", mode=0o755)
    with trusted_exec.open_program(str(checked), "the freeze program") as program:
        swapped = write_script(tmp_path / "other.sh", f"echo swapped > {out}", mode=0o755)
        os.rename(swapped, checked)
        done = subprocess.run([str(checked)], capture_output=True, timeout=30, **program.popen_kwargs())
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "checked\n"
    with trusted_exec.open_program(
        str(checked), "the freeze program"
    ) as program:  # checked again: the new one
        subprocess.run([str(checked)], check=True, timeout=30, **program.popen_kwargs())
    assert out.read_text() == "swapped\n"


def test_a_symlink_swapped_in_after_resolution_is_not_followed(tmp_path):
    """The last component is opened O_NOFOLLOW: a symlink in its place is refused, not followed."""
    real = write_script(tmp_path / "freeze.sh", "true", mode=0o755)
    (tmp_path / "link").symlink_to(real)
    directory = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(ConfigError, match="not a regular file"):
            trusted_exec.open_in(directory, "link", str(tmp_path / "link"), "the freeze program")
    finally:
        os.close(directory)


def test_the_watchdog_runs_a_thaw_command_only_if_it_is_still_trusted(tmp_path):
    """The watchdog runs thaw commands long after the check: it checks again and executes by descriptor."""
    owned = tmp_path / "owned"
    owned.mkdir()
    ran_trusted, ran_untrusted = tmp_path / "trusted-ran", tmp_path / "untrusted-ran"
    trusted = write_script(tmp_path / "thaw.sh", f"touch {ran_trusted}", mode=0o755)
    untrusted = write_script(owned / "thaw.sh", f"touch {ran_untrusted}", mode=0o755)
    os.chown(owned, NOBODY, NOBODY)  # after the writer's check: a user took the directory over
    actions = [RunCommand(argv=[str(untrusted)]), RunCommand(argv=[str(trusted)])]
    watchdog = Watchdog.start(actions, time.monotonic() + 600)
    watchdog.fire()
    assert ran_trusted.exists()
    assert not ran_untrusted.exists()


# ---- (e) no secrets in a writer's environment -------------------------------------------------------


@pytest.fixture
def repo_env(tmp_path: Path) -> dict[str, str]:
    """A repository and every way a requester holds its password, plus a cloud secret."""
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    password_file = tmp_path / f"{SECRET_FILE_MARK}.txt"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return {
        "SHADOWVAULT_REPOSITORY": str(repo),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_PASSWORD_FILE": str(password_file),
        "AWS_SECRET_ACCESS_KEY": "aws-" + PASSWORD,
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }


def assert_clean(dump: Path) -> None:
    text = dump.read_text()
    env = environment_of(dump)
    assert PASSWORD not in text and SECRET_FILE_MARK not in text, text
    assert not {"SHADOWVAULT_PASSWORD", "SHADOWVAULT_PASSWORD_FILE", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert env.get("PATH") and env.get("LANG") == "C.UTF-8" and env.get("TZ") == "UTC"


def test_backup_gives_writers_none_of_the_requesters_secrets(private_dirs, tmp_path, btrfs, cli, repo_env):
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "file").write_text("content\n")
    script_dump, external_dump = btrfs.mount / "script.env", btrfs.mount / "external.env"
    freeze = write_script(tmp_path / "freeze.sh", f"env > {script_dump}", mode=0o755)
    write_config(private_dirs / "config", "app", f'freeze = ["{freeze}"]\npaths = ["{data}"]\n')
    writer = write_writer(
        tmp_path,
        "dumper",
        f"""
        class W(sdk.Writer):
            def freeze(self, req):
                with open("{external_dump}", "w") as f:
                    f.writelines(f"{{k}}={{v}}\\n" for k, v in os.environ.items())
    """,
    )
    write_config(
        private_dirs / "config", "ext", f'type = "external"\ncommand = ["{sys.executable}", "{writer}"]\n'
    )
    done = cli("backup", "--writer", "app", "--writer", "ext", btrfs.mount, env=repo_env)
    assert done.returncode == 0, done.stderr
    assert_clean(script_dump)
    assert environment_of(script_dump)["SHADOWVAULT_PHASE"] == "freeze"
    assert_clean(external_dump)
    assert environment_of(external_dump)["SHADOWVAULT_WRITER"] == "ext"


HANGING_REQUESTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadowvault.shadow.coordinator import SetOptions, create_shadow_set
    from shadowvault.shadow.providers.live import LiveProvider

    class HangingProvider(LiveProvider):
        name = "hanging"
        def create(self, volume, set_id, index, *scope):
            Path(sys.argv[2]).write_text("committing")
            time.sleep(3600)

    create_shadow_set(
        [sys.argv[1]],
        SetOptions(
            writers=["script:hold"], provider=HangingProvider(), freeze_timeout=60, commit_timeout=3600
        ),
    )
    """
)


def test_the_watchdogs_thaw_gets_none_of_the_requesters_secrets(private_dirs, tmp_path, btrfs, repo_env):
    """The requester dies mid-set: the watchdog runs the thaw command, with a clean environment too."""
    dump = btrfs.mount / "thaw.env"
    freeze = write_script(tmp_path / "freeze.sh", "true", mode=0o755)
    thaw = write_script(tmp_path / "thaw.sh", f"env > {dump}.tmp; mv {dump}.tmp {dump}", mode=0o755)
    write_config(private_dirs / "config", "hold", f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\n')
    committing = tmp_path / "committing"
    script = tmp_path / "requester.py"
    script.write_text(HANGING_REQUESTER)
    child = subprocess.Popen(
        [sys.executable, str(script), str(btrfs.mount), str(committing)],
        env={**os.environ, **repo_env},
        start_new_session=True,
    )
    try:
        assert wait_for(committing.exists), "the requester never reached the commit"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert wait_for(dump.exists, 20), "the watchdog did not run the thaw command"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert_clean(dump)
    assert environment_of(dump)["SHADOWVAULT_PHASE"] == "thaw"


def test_an_external_writers_own_environment_table_is_passed(tmp_path, monkeypatch):
    """What the administrator declares in [environment] reaches the writer; the requester's secrets do not."""
    monkeypatch.setenv("SHADOWVAULT_PASSWORD", PASSWORD)
    dump = tmp_path / "env"
    writer_script = write_writer(
        tmp_path,
        "identify",
        f"""
        class W(sdk.Writer):
            def identify(self, req):
                with open("{dump}", "w") as f:
                    f.writelines(f"{{k}}={{v}}\\n" for k, v in os.environ.items())
                return {{"components": []}}
    """,
    )
    writer = ExternalWriter(
        "app", command=[sys.executable, str(writer_script)], environment={"APP_MODE": "x"}
    )
    try:
        writer.identify()
    finally:
        writer.abort(registry_context())
    env = environment_of(dump)
    assert env["APP_MODE"] == "x" and "SHADOWVAULT_PASSWORD" not in env and PASSWORD not in dump.read_text()


# ---- (f) a user who is not root --------------------------------------------------------------------


@pytest.mark.parametrize("state", ["made", "missing"], ids=["state-dir-exists", "no-state-dir-yet"])
def test_a_user_who_is_not_root_is_told_shadow_sets_need_root(private_dirs, btrfs, state, nobody_pythonpath):
    require_tools("setpriv")
    os.chmod(private_dirs, 0o755)  # the config dir must be reachable; the state dir stays root's
    os.chmod(btrfs.mount.parent, 0o755)  # and the volume
    if state == "made":
        ShadowStore().list()  # the sets directory exists (0700, root's): what a used machine has
    commands = [
        ["shadows", "create", "--volume", str(btrfs.mount)],
        ["shadows", "create", "--volume", str(btrfs.mount), "--provider", "reflink"],
        ["shadows", "create", "--volume", str(btrfs.mount), "--provider", "live", "--writer", "fsfreeze"],
        ["exec", "--volume", str(btrfs.mount), "--", "true"],
    ]
    for args in commands:
        message = one_line_error(run_as_nobody(nobody_pythonpath, "-m", "shadowvault.cli.launch", *args))
        assert "needs root" in message, (args, message)
    assert ShadowStore().list() == []
    assert not (btrfs.mount / ".shadowvault").exists() or not os.listdir(btrfs.mount / ".shadowvault")


def test_a_backup_by_a_user_who_is_not_root_says_shadow_sets_need_root(
    private_dirs, btrfs, nobody_pythonpath
):
    require_tools("setpriv")
    os.chmod(private_dirs, 0o755)
    os.chmod(btrfs.mount.parent, 0o755)
    ShadowStore().list()
    (btrfs.mount / "file").write_text("content\n")
    repo = btrfs.mount.parent / "repo"  # the user's own repository, beside the volume
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(repo)], check=True)
    env = {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
    message = one_line_error(
        run_as_nobody(nobody_pythonpath, "-m", "shadowvault.cli.launch", "backup", str(btrfs.mount), env=env)
    )
    assert "needs root" in message and "--provider none" in message
    assert ShadowStore().list() == []
