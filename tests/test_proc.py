"""Every command Shadowvault runs (writers' tools, servers a restore starts) is spared the requester's
secrets, whatever environment its caller built."""

from __future__ import annotations

import os

from shadowvault import proc


def test_commands_never_see_the_repository_password(monkeypatch):
    monkeypatch.setenv("SHADOWVAULT_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SHADOWVAULT_PASSWORD_FILE", "/root/pw-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("SV_TEST_HARMLESS", "kept")
    outputs = [
        proc.output(["env"]),
        proc.output(["env"], env={**os.environ, "PGPORT": "5433"}),  # a writer's own copy of the env
        proc.run_group(["env"], timeout=10).stdout.decode(),
    ]
    for text in outputs:
        assert "secret" not in text
        assert "SV_TEST_HARMLESS=kept" in text and "PATH=" in text
    assert "PGPORT=5433" in outputs[1]
