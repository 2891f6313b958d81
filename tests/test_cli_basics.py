"""The CLI contract every command shares: usage errors are one line with exit 2."""


def test_unknown_command_is_one_line_exit_2(cli):
    done = cli("no-such-command")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("shadowvault: error:")
    assert "Traceback" not in done.stderr


def test_version(cli):
    done = cli("--version")
    assert done.returncode == 0
    assert "shadowvault" in done.stdout
