"""Requests the daemon must refuse as the caller's mistake: a 4xx with one JSON line, never a 500."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shadowvault.client import Client
from shadowvault.errors import UsageError
from shadowvault.repo.repository import Repository
from shadowvault.shadow.options import SetOptions
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.service.daemon import raw_call, running_daemon


def test_a_job_with_a_bad_name_or_no_definition_is_the_caller_s_mistake(private_dirs):
    with running_daemon() as daemon:
        status, error = raw_call(daemon.socket, "POST", "/v1/jobs/..%2Fetc%2Fpasswd/runs")
        assert status == 400 and error["error"].startswith("invalid job name '../etc/passwd'")
        assert error["exit_status"] == 2
        status, error = raw_call(daemon.socket, "POST", "/v1/jobs/nightly/runs")
        assert status == 404 and error["error"].startswith("no job 'nightly': ")
        assert error["exit_status"] == 2
        assert "Traceback" not in daemon.log_text()


def test_a_nul_character_or_json_nested_too_deeply_is_a_bad_request(private_dirs):
    with running_daemon() as daemon:
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", b'{"volumes": ["/srv\\u0000x"]}')
        assert (status, error["error"]) == (
            400,
            r"invalid request: volumes: '/srv\x00x' holds a NUL character",
        )
        body = b'{"volumes": ["/srv"], "writers": ["sqlite:/srv/a\\u0000"]}'
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", body)
        assert status == 400
        assert error["error"] == "invalid request: a string holds a NUL character - at `$.writers[0]`"
        status, error = raw_call(daemon.socket, "DELETE", "/v1/exposures?at=/srv%00")
        assert (status, error["error"]) == (400, r"at: '/srv\x00' holds a NUL character")
        deep = b"[" * 3000 + b"]" * 3000
        options = b'{"directory_options": {"x": ' + deep + b"}}"
        restore = b'{"snapshot": "latest", "component": "files", "options": ' + options + b"}"
        body = b'{"repository": "/r", "password": "p", "restore": ' + restore + b"}"
        status, error = raw_call(daemon.socket, "POST", "/v1/component-restores", body)
        assert (status, error["error"]) == (400, "invalid request: the JSON is nested too deeply")
        assert "Traceback" not in daemon.log_text()


def test_a_relative_path_is_refused_not_resolved_in_the_daemon_s_working_directory(private_dirs):
    backup = b'{"repository": "/r", "password": "p", "paths": ["etc"]}'
    restore = b'{"repository": "/r", "password_file": "pass", "snapshot": "latest", "target": "/t"}'
    no_password = b'{"repository": "/r", "paths": ["/etc"]}'
    cases = [
        (
            "POST",
            "/v1/shadow-sets",
            b'{"volumes": ["srv"]}',
            "invalid request: volumes: 'srv' is not an absolute path",
        ),
        (
            "POST",
            "/v1/shadow-sets/x/exposures",
            b'{"at": "etc"}',
            "invalid request: at: 'etc' is not an absolute path",
        ),
        (
            "POST",
            "/v1/shadow-sets/x/exposures",
            b'{"at": ""}',
            "invalid request: at: '' is not an absolute path",
        ),
        (
            "POST",
            "/v1/shadow-sets/x/exposures",
            b'{"volume": -1}',
            "invalid request: volume: -1 is not the index of a shadow (0 or more)",
        ),
        ("DELETE", "/v1/exposures?at=etc", b"", "at: 'etc' is not an absolute path"),
        ("POST", "/v1/backups", backup, "invalid request: paths: 'etc' is not an absolute path"),
        ("POST", "/v1/restores", restore, "invalid request: password_file: 'pass' is not an absolute path"),
        (
            "POST",
            "/v1/backups",
            b'{"repository": "/r", "password": "p", "paths": ["/etc"], "tags": ["x\\ny"]}',
            "'x\\ny' is not a tag (empty, or control characters)",
        ),
        (
            "POST",
            "/v1/backups",
            b'{"repository": "/r", "password": "p", "paths": ["/etc"], "host": "a\\u001bb"}',
            "'a\\x1bb' is not a host name (empty, or control characters)",
        ),
        (
            "POST",
            "/v1/backups",
            no_password,
            'invalid request: give the repository password as "password" or "password_file"',
        ),
    ]
    with running_daemon() as daemon:
        for method, path, body, message in cases:
            status, error = raw_call(daemon.socket, method, path, body)
            assert (status, error["error"]) == (400, message), (method, path, body)
        with Client(daemon.socket) as client:
            assert client.runs() == []  # refused as asked for: no run started
        assert "Traceback" not in daemon.log_text()


def test_expose_names_a_volume_relative_to_the_caller_s_directory_through_the_daemon_too(btrfs, private_dirs):
    (btrfs.mount / "data.txt").write_text("shadowed\n")
    with running_daemon() as daemon:
        env = {**os.environ, "SHADOWVAULT_SOCKET": str(daemon.socket)}
        with Client(daemon.socket) as client:
            set_id = client.create_shadow_set([str(btrfs.mount)], persistent=True)["id"]
            for flags, at in (([], "via-daemon"), (["--no-daemon"], "in-process")):
                where = ["--volume", btrfs.mount.name, "--at", str(btrfs.mount.parent / at), "--json"]
                exposed = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "shadowvault.cli.launch",
                        *flags,
                        "shadows",
                        "expose",
                        set_id,
                        *where,
                    ],
                    cwd=btrfs.mount.parent,  # not the daemon's working directory
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert exposed.returncode == 0, exposed.stderr
                assert json.loads(exposed.stdout)["volume"] == str(btrfs.mount)
                assert (btrfs.mount.parent / at / "data.txt").read_text() == "shadowed\n"
            client.delete_shadow_set(set_id)


def test_a_timeout_too_long_for_the_clocks_is_a_bad_request_not_a_failed_commit(private_dirs):
    for timeout in (float("nan"), float("inf"), 1e300, 86400.5):
        with pytest.raises(UsageError, match="at most 86400"):
            SetOptions(freeze_timeout=timeout)
    with running_daemon() as daemon:
        body = b'{"volumes": ["/nonexistent"], "commit_timeout": 1e300}'
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", body)
        assert (status, error["error"]) == (
            400,
            "timeouts must be positive numbers of seconds, at most 86400",
        )
        assert "Traceback" not in daemon.log_text()


def test_an_application_or_vm_restore_s_relative_or_mistyped_target_is_a_bad_request(private_dirs):
    component = b'{"snapshot": "latest", "component": "files", "options": {"target_root": %s}}'
    writer = b'{"request": {"snapshot": "latest", "target_root": "srv"}}'
    cases = [
        (
            "/v1/component-restores",
            b'{"repository": "/r", "password": "p", "restore": ' + component % b'"srv"' + b"}",
            "invalid request: restore.options.target_root: 'srv' is not an absolute path",
        ),
        (
            "/v1/component-restores",
            b'{"repository": "/r", "password": "p", "restore": ' + component % b"5" + b"}",
            "invalid request: Expected `str`, got `int` - at `$.restore.options.target_root`",
        ),
        (
            "/v1/writer-restores",
            b'{"repository": "/r", "password": "p", "order": ' + writer + b"}",
            "invalid request: order.request.target_root: 'srv' is not an absolute path",
        ),
        (
            "/v1/vm-restores",
            b'{"repository": "/r", "password": "p", "order": {"snapshot": "1", "vm": "w", "target": "vm"}}',
            "invalid request: order.target: 'vm' is not an absolute path",
        ),
    ]
    with running_daemon() as daemon:
        for path, body, message in cases:
            status, error = raw_call(daemon.socket, "POST", path, body)
            assert (status, error["error"]) == (400, message), path
        assert "Traceback" not in daemon.log_text()


def test_a_component_restore_s_relative_target_root_is_the_caller_s_through_the_daemon_too(tmp_path):
    source, target = tmp_path / "src", tmp_path / "restored"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    target.mkdir()
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    env = {**os.environ, "SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "shadowvault.cli.launch"]
    backup = ["--no-daemon", "backup", str(source), "--provider", "none"]
    done = subprocess.run([*command, *backup], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    restore = ["restore", "latest", "--component", "files", "--target-root", "restored", "--dry-run"]
    with running_daemon() as daemon:
        env["SHADOWVAULT_SOCKET"] = str(daemon.socket)
        said = []
        for flags in ([], ["--no-daemon"]):
            done = subprocess.run(
                [*command, *flags, *restore],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            said.append((done.stdout, done.stderr))
    assert said[0] == said[1]
    assert f"files -> {target}: 2 to create" in said[0][1]  # src and src/a.txt
