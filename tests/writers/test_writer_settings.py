"""A writers.d file with a setting its writer does not know, or a value of the wrong type, is refused
when it is read, naming the file: it used to be ignored (a typo'd `port` or `socket` left the writer
on its default) or to fail only at the next backup (`port = "abc"` at prepare_snapshot,
`freeze_timeout = "x"` as an "internal error: ValueError")."""

from __future__ import annotations

import json

import pytest

from shadowvault.errors import ConfigError, UsageError
from shadowvault.shadow.writers import registry

BAD = {
    "prot = 5433\n": "unknown setting 'prot' for a postgresql writer",
    'port = "abc"\n': "port must be a positive integer, not 'abc'",
    'freeze_timeout = "x"\n': "freeze_timeout must be a positive number, not 'x'",
    "freeze_timeout = 0\n": "freeze_timeout must be a positive number, not 0",
    "user = 5\n": "user must be a string, not 5",
}


@pytest.mark.parametrize("line", list(BAD))
def test_a_bad_setting_is_refused_naming_the_file(private_dirs, line):
    config = private_dirs / "config" / "writers.d" / "pg.toml"
    config.write_text(f'type = "postgresql"\ninstance = "/srv/pg/main"\n{line}')
    config.chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        registry.make_writer("postgresql:/srv/pg/main")
    assert str(refused.value).startswith(f"{config}: {BAD[line]}"), refused.value


def test_writers_list_shows_the_refused_file_and_good_settings_still_load(private_dirs, cli):
    d = private_dirs / "config" / "writers.d"
    (d / "maria.toml").write_text('type = "mariadb"\ninstance = "/srv/maria"\nsokcet = "/run/other.sock"\n')
    (d / "pg.toml").write_text(
        'type = "postgresql"\ninstance = "/srv/pg/main"\nuser = "backup"\npassword = "p"\nport = 5433\n'
        'on_failure = "degrade"\nfreeze_timeout = 20\nwal_max_bytes = 1048576\n'
    )
    for f in d.iterdir():
        f.chmod(0o644)
    env = {"SHADOWVAULT_CONFIG_DIR": str(private_dirs / "config")}
    done = cli("writers", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    entries = {e["writer"]: e for e in json.loads(done.stdout) if e["kind"] == "configured"}
    assert entries["maria"]["state"] == "refused"  # by its writers.d name
    assert "unknown setting 'sokcet' for a mariadb writer" in entries["maria"]["detail"]
    pg = entries["postgresql:/srv/pg/main"]  # its settings accepted; no server runs there
    assert pg["state"] == "unreachable" and "not running on /srv/pg/main" in pg["detail"], pg


@pytest.mark.parametrize("instance", ["bad", "127.0.0.1:notaport", "127.0.0.1:0", "localhost:70000"])
def test_a_redis_instance_that_is_no_address_is_a_usage_error(instance):
    """It failed at identify with int()'s "invalid literal for int() with base 10: 'bad'"."""
    with pytest.raises(UsageError, match=rf"redis:{instance}: expected HOST:PORT .* or a unix socket"):
        registry.make_writer(f"redis:{instance}")


def test_an_external_writer_is_selected_by_the_name_writers_list_gives_it(private_dirs, tmp_path):
    """`writers list` says `external:app`; `--writer external:app` was "unknown writer 'external'"."""
    program = tmp_path / "w.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    config = private_dirs / "config" / "writers.d" / "app.toml"
    config.write_text(f'type = "external"\ncommand = ["{program}"]\npaths = ["{tmp_path}"]\n')
    config.chmod(0o644)
    assert registry.make_writer("external:app").label == "external:app"
    assert registry.make_writer("app").label == "external:app"
    with pytest.raises(UsageError, match=r"unknown writer 'external:nope' \(valid: .*external:app"):
        registry.make_writer("external:nope")


def test_a_malformed_writers_d_file_is_listed_once_as_itself(private_dirs, cli):
    """It was listed twice: as itself, and as `qemu` (discovered, refused) with its TOML error."""
    config = private_dirs / "config" / "writers.d" / "broken.toml"
    config.write_text('type = "postgresql"\ninstance = \n')
    config.chmod(0o644)
    done = cli("writers", "list", "--json", env={"SHADOWVAULT_CONFIG_DIR": str(private_dirs / "config")})
    assert done.returncode == 0, done.stderr
    refused = [e for e in json.loads(done.stdout) if e["state"] == "refused"]
    assert [(e["writer"], e["kind"]) for e in refused] == [(str(config), "configured")], refused
