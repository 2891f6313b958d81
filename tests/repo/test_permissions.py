"""Repositories are private: created 0700/0400 whatever the umask, and `check` warns when they are not."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.repo.helpers import PASSWORD


def _modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_a_new_repository_and_its_objects_are_private_under_umask_022(tmp_path, cli):
    repo = tmp_path / "repo"
    env = {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("secret-ish\n")
    old = os.umask(0o022)
    try:
        assert cli("init", env=env).returncode == 0
        assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    finally:
        os.umask(old)
    modes = _modes(repo)
    assert any(name.startswith("keys/") for name in modes) and any(name.startswith("data/") for name in modes)
    for name, mode in modes.items():
        if (repo / name).is_dir():
            assert mode == 0o700, f"{name} is {mode:04o}"
        else:
            assert mode == 0o400, f"{name} is {mode:04o}"
    checked = cli("check", "--json", env=env)
    assert checked.returncode == 0 and not json.loads(checked.stdout)["warnings"]


def test_check_warns_when_others_can_read_the_keys(tmp_path, cli):
    repo = tmp_path / "repo"
    env = {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
    assert cli("init", env=env).returncode == 0
    os.chmod(repo, 0o755)
    os.chmod(repo / "keys", 0o755)
    for key in (repo / "keys").iterdir():
        os.chmod(key, 0o644)
    checked = cli("check", env=env)
    assert checked.returncode == 0
    assert "other users can read" in checked.stderr and "keys/" in checked.stderr
    assert f"chmod -R go-rwx {repo}" in checked.stderr
