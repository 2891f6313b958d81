"""External writers over the JSON-lines protocol: the example writer, hangs, crashes, the watchdog."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shadowvault.errors import ConfigError, ShadowError
from shadowvault.shadow.coordinator import SetOptions, shadow_path, shadow_set
from shadowvault.shadow.manifest import Consistency, WriterState
from shadowvault.shadow.writers import registry
from shadowvault.shadow.writers.external import ExternalWriter
from tests.writers.helpers import report_of

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "writers" / "flock_writer.py"
RECORD = 4096  # each record is written in two halves, with a pause between them, under LOCK_SH

APP = textwrap.dedent(
    f"""
    import fcntl, os, sys, time
    data, lock = sys.argv[1], sys.argv[2]
    lfd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    while True:
        n += 1
        record = (str(n).encode() + b" ").ljust({RECORD} - 1, b"x") + b"\\n"
        fcntl.flock(lfd, fcntl.LOCK_SH)
        os.write(fd, record[: {RECORD} // 2])
        time.sleep(0.002)
        os.write(fd, record[{RECORD} // 2 :])
        fcntl.flock(lfd, fcntl.LOCK_UN)
        time.sleep(0.001)
    """
)


def write_config(name: str, body: str) -> Path:
    path = Path(os.environ["SHADOWVAULT_CONFIG_DIR"]) / "writers.d" / f"{name}.toml"
    path.write_text(textwrap.dedent(body))
    path.chmod(0o644)
    return path


def write_writer(directory: Path, name: str, body: str) -> Path:
    """A writer script using the SDK (root-owned, 0755: what writers.d accepts)."""
    path = directory / f"{name}.py"
    path.write_text(
        "from shadowvault import writer_sdk as sdk\nimport os, sys, time\n"
        + textwrap.dedent(body)
        + "\nsdk.run(W)\n"
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def app(btrfs):
    """The toy application on btrfs, and the example writer declared in writers.d for it."""
    data_dir = btrfs.mount / "app"
    data_dir.mkdir()
    data, lock = data_dir / "records", btrfs.mount / "app.lock"
    process = subprocess.Popen([sys.executable, "-c", APP, str(data), str(lock)])
    try:
        while not data.exists() or data.stat().st_size < 10 * RECORD:
            time.sleep(0.01)
        write_config(
            "flock-app",
            f"""
            type = "external"
            command = ["{sys.executable}", "{EXAMPLE}"]
            paths = ["{data_dir}"]
            [timeouts]
            freeze = 10
            [options]
            lock_file = "{lock}"
            data = ["{data}"]
        """,
        )
        yield btrfs, data, process
    finally:
        process.kill()
        process.wait()


def assert_whole_records(content: bytes) -> int:
    assert len(content) % RECORD == 0, f"a torn record: {len(content)} bytes is not a multiple of {RECORD}"
    numbers = [int(content[i : i + 12].split()[0]) for i in range(0, len(content), RECORD)]
    assert numbers == list(range(1, len(numbers) + 1))
    return len(numbers)


def processes_running(script: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if str(script).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def no_process_runs(script: Path) -> bool:
    return not processes_running(script)


def kill_leftovers(*scripts: Path) -> None:
    """After a failed assertion: stop, by PID, writer processes this test started."""
    for script in scripts:
        for pid in processes_running(script):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_example_writer_gives_whole_records_in_20_shadow_sets(app):
    fs, data, _ = app
    for _ in range(20):
        written_before = data.stat().st_size // RECORD
        with shadow_set([str(fs.mount)]) as manifest:  # selected automatically through its paths
            report = report_of(manifest, "external")
            assert report.instance == "flock-app"
            assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
            assert report.components[0].consistency == Consistency.APPLICATION
            assert report.metadata["held_by_pid"] > 0
            assert "freeze" in report.metadata["timing"]
            copied = Path(shadow_path(manifest, str(data))).read_bytes()
        assert assert_whole_records(copied) >= written_before
    assert no_process_runs(EXAMPLE), "the writer process ends with its shadow set"


def test_a_hanging_writer_times_out_and_everything_is_released(app, tmp_path):
    fs, data, _ = app
    hang = write_writer(
        tmp_path,
        "hang",
        """
        class W(sdk.Writer):
            def freeze(self, req):
                time.sleep(3600)
    """,
    )
    write_config(
        "hang",
        f"""
        type = "external"
        command = ["{sys.executable}", "{hang}"]
        paths = ["{fs.mount}"]
    """,
    )
    started = time.monotonic()
    with (
        pytest.raises(ShadowError, match=r"writer external:hang timed out at freeze after 2\.0 s") as err,
        shadow_set([str(fs.mount)], SetOptions(freeze_timeout=2)),
    ):
        pass
    assert time.monotonic() - started < 30
    manifest = err.value.manifest
    assert manifest.state == "aborted" and manifest.shadows == []
    assert report_of_instance(manifest, "hang").state == WriterState.TIMED_OUT
    assert no_process_runs(hang), "the hung writer was terminated"
    size = data.stat().st_size
    time.sleep(0.2)
    assert data.stat().st_size > size, "the application runs again: the example writer released its lock"


def report_of_instance(manifest, instance):
    return next(w for w in manifest.writers if w.instance == instance)


def test_a_writer_that_exits_mid_freeze_aborts_the_set(app, tmp_path):
    fs, data, _ = app
    crash = write_writer(
        tmp_path,
        "crash",
        """
        class W(sdk.Writer):
            def freeze(self, req):
                print("giving up", file=sys.stderr)
                os._exit(3)
    """,
    )
    write_config(
        "crash",
        f"""
        type = "external"
        command = ["{sys.executable}", "{crash}"]
        paths = ["{fs.mount}"]
    """,
    )
    with (
        pytest.raises(
            ShadowError,
            match=r"writer external:crash failed at freeze: the writer process exited "
            r"with status 3 during freeze \(stderr: giving up\)",
        ) as err,
        shadow_set([str(fs.mount)]),
    ):
        pass
    manifest = err.value.manifest
    assert manifest.state == "aborted" and manifest.shadows == []
    assert report_of_instance(manifest, "flock-app").state.failed  # it was told to abort
    size = data.stat().st_size
    time.sleep(0.2)
    assert data.stat().st_size > size, "everything thawed: the application writes again"
    assert no_process_runs(EXAMPLE)


def test_a_failing_writer_can_degrade_instead(app, tmp_path):
    fs, _, _ = app
    veto = write_writer(
        tmp_path,
        "veto",
        """
        class W(sdk.Writer):
            def identify(self, req):
                return [{"name": "veto-data", "paths": [req["config"]["path"]]}]
            def freeze(self, req):
                raise sdk.Failure("the application refused to quiesce")
    """,
    )
    write_config(
        "veto",
        f"""
        type = "external"
        command = ["{sys.executable}", "{veto}"]
        on_failure = "degrade"
        [options]
        path = "{fs.mount}/other"
    """,
    )
    with shadow_set([str(fs.mount)], SetOptions(writers=["veto"])) as manifest:
        report = report_of_instance(manifest, "veto")
        assert report.state == WriterState.FAILED_AT_FREEZE
        assert "the application refused to quiesce" in report.failure
        assert report.components[0].consistency == Consistency.CRASH
        assert report_of_instance(manifest, "flock-app").state == WriterState.WAITING_FOR_BACKUP_COMPLETE
    try:
        assert no_process_runs(veto), "the degraded writer's process outlives its set"
    finally:
        kill_leftovers(veto)


def test_watchdog_terminates_the_writer_when_the_coordinator_dies(app, tmp_path):
    """SIGKILL the requester while the example writer holds its lock: the watchdog SIGTERMs it."""
    fs, data, _ = app
    hang = write_writer(
        tmp_path,
        "slow",
        """
        class W(sdk.Writer):
            def freeze(self, req):
                time.sleep(3600)
    """,
    )
    write_config(
        "slow",
        f"""
        type = "external"
        command = ["{sys.executable}", "{hang}"]
        paths = ["{fs.mount}"]
    """,
    )
    requester = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from shadowvault.shadow.coordinator import SetOptions, shadow_set
        with shadow_set(["{fs.mount}"], SetOptions(freeze_timeout=120)):
            pass
    """),
        ],
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until the application is held (no record written for a while)
            size = data.stat().st_size
            time.sleep(0.3)
            if data.stat().st_size == size:
                break
            assert time.monotonic() < deadline, "the example writer never froze the application"
        requester.kill()
        requester.wait()
        deadline = time.monotonic() + 20
        while data.stat().st_size == size:
            assert time.monotonic() < deadline, "the application stayed blocked after the requester died"
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while not (no_process_runs(EXAMPLE) and no_process_runs(hang)):
            assert time.monotonic() < deadline, "writer processes outlived their requester"
            time.sleep(0.05)
    finally:
        if requester.poll() is None:
            requester.kill()
            requester.wait()
        kill_leftovers(EXAMPLE, hang)


def test_an_unsafe_executable_is_refused(tmp_path):
    script = write_writer(
        tmp_path,
        "unsafe",
        """
        class W(sdk.Writer):
            def freeze(self, req):
                pass
    """,
    )
    script.chmod(0o775)
    path = write_config(
        "unsafe",
        f"""
        type = "external"
        command = ["{sys.executable}", "{script}"]
    """,
    )
    with pytest.raises(ConfigError, match="must not be writable by group or others"):
        registry.make_writer("unsafe")
    assert path.exists()
    with pytest.raises(ConfigError, match="command"):
        ExternalWriter.from_config("x", {"type": "external"}, path)


def test_protocol_garbage_is_a_clear_error(btrfs, tmp_path):
    script = tmp_path / "garbage.sh"
    script.write_text("#!/bin/sh\nread line\necho 'this is not json'\nsleep 5\n")
    script.chmod(0o755)
    writer = ExternalWriter("garbage", command=[str(script)], paths=[str(btrfs.mount)])
    with (
        pytest.raises(
            ShadowError,
            match=r"writer external:garbage failed at identify: answered identify with "
            r"something that is not a JSON object: 'this is not json'",
        ),
        shadow_set([str(btrfs.mount)], SetOptions(writers=[writer], auto_writers=False)),
    ):
        pass
    assert writer.pid is None
    assert no_process_runs(script)


def test_sigterm_in_the_middle_of_freeze_runs_abort(btrfs, tmp_path):
    """A writer stuck half-way through freeze still releases: SIGTERM -> terminate() -> abort()."""
    marker = tmp_path / "released"
    stuck = write_writer(
        tmp_path,
        "stuck",
        f"""
        class W(sdk.Writer):
            def freeze(self, req):
                time.sleep(3600)
            def abort(self, req):
                open("{marker}", "w").write("abort after SIGTERM")
    """,
    )
    writer = ExternalWriter("stuck", command=[sys.executable, str(stuck)], paths=[str(btrfs.mount)])
    with (
        pytest.raises(ShadowError, match="timed out at freeze"),
        shadow_set([str(btrfs.mount)], SetOptions(writers=[writer], auto_writers=False, freeze_timeout=1)),
    ):
        pass
    assert marker.read_text() == "abort after SIGTERM"
    assert no_process_runs(stuck)


def test_restore_events_reach_the_writer_with_its_components(tmp_path):
    """pre_restore and post_restore carry the components (with the metadata kept at backup) and the target."""
    from shadowvault.shadow.manifest import Component
    from shadowvault.shadow.writers.base import RestoreContext

    log = tmp_path / "events.jsonl"
    script = write_writer(
        tmp_path,
        "restorer",
        f"""
        import json
        class W(sdk.Writer):
            def freeze(self, req):
                pass
            def pre_restore(self, req):
                open("{log}", "a").write(json.dumps(req) + "\\n")
            def post_restore(self, req):
                open("{log}", "a").write(json.dumps(req) + "\\n")
                if req["options"].get("fail"):
                    raise sdk.Failure("recovery failed: no quorum")
    """,
    )
    writer = ExternalWriter("restorer", command=[sys.executable, str(script)], config={"mode": "x"})
    component = Component(
        name="db", writer="external", instance="restorer", paths=["/srv/db"], metadata={"position": 42}
    )
    ctx = RestoreContext(components=[component], target_root=str(tmp_path / "target"))
    writer.pre_restore(ctx)
    writer.post_restore(ctx)
    import json

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["pre_restore", "post_restore"]
    assert events[1]["components"] == [
        {"name": "db", "paths": ["/srv/db"], "kind": "files", "metadata": {"position": 42}}
    ]
    assert events[1]["target_root"] == str(tmp_path / "target") and events[1]["config"] == {"mode": "x"}
    assert no_process_runs(script)
    with pytest.raises(Exception, match="recovery failed: no quorum"):
        writer.pre_restore(RestoreContext(components=[component], options={"fail": True}))
        writer.post_restore(RestoreContext(components=[component], options={"fail": True}))
    assert no_process_runs(script)


def test_watchdog_signal_reaches_a_writer_that_ignores_end_of_input(btrfs, tmp_path):
    """A writer that keeps holding after stdin closes is released by the watchdog's SIGTERM alone."""
    frozen, released = tmp_path / "frozen", tmp_path / "released"
    careless = tmp_path / "careless.sh"
    careless.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        trap 'echo released > {released}; exit 0' TERM
        while IFS= read -r line; do
          case "$line" in
            *'"event": "freeze"'*) echo frozen > {frozen}; echo '{{"state": "ok"}}' ;;
            *) echo '{{"state": "ok"}}' ;;
          esac
        done
        while true; do sleep 0.1; done
    """)
    )
    careless.chmod(0o755)
    slow = write_writer(
        tmp_path,
        "slow",
        """
        class W(sdk.Writer):
            def freeze(self, req):
                time.sleep(3600)
    """,
    )
    write_config("careless", f'type = "external"\ncommand = ["{careless}"]\n')
    write_config("slow", f'type = "external"\ncommand = ["{sys.executable}", "{slow}"]\n')
    requester = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from shadowvault.shadow.coordinator import SetOptions, shadow_set
        opts = SetOptions(writers=["careless", "slow"], auto_writers=False, freeze_timeout=120)
        with shadow_set(["{btrfs.mount}"], opts):
            pass
    """),
        ],
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 30
        while not frozen.exists():
            assert requester.poll() is None and time.monotonic() < deadline, "the careless writer never froze"
            time.sleep(0.02)
        time.sleep(0.3)  # the watchdog is armed before the first freeze
        requester.kill()
        requester.wait()
        deadline = time.monotonic() + 20
        while not released.exists():
            assert time.monotonic() < deadline, "no SIGTERM reached the writer after its requester died"
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while not (no_process_runs(careless) and no_process_runs(slow)):
            assert time.monotonic() < deadline, "writer processes outlived their requester"
            time.sleep(0.05)
    finally:
        if requester.poll() is None:
            requester.kill()
            requester.wait()
        kill_leftovers(careless, slow)


def test_the_example_writers_d_file_is_valid():
    import tomllib

    path = EXAMPLE.parent / "flock-app.toml"
    config = tomllib.loads(path.read_text())
    writer = ExternalWriter.from_config("flock-app", config, path)
    assert writer.timeouts["freeze"] == 10 and writer.paths == ["/srv/app/data"]
    assert writer.config["lock_file"] == "/srv/app/.lock"


def test_a_reply_of_two_lines_is_a_protocol_error_not_the_next_events_answer(btrfs, tmp_path):
    """The second line used to be taken as prepare_backup's answer: every reply one event late."""
    script = tmp_path / "chatty.sh"
    script.write_text(
        '#!/bin/sh\nread line\necho \'{"state": "ok"}\'\necho \'{"state": "ok"}\'\n'
        'while read line; do echo \'{"state": "failed", "error": "not frozen"}\'; done\n'
    )
    script.chmod(0o755)
    writer = ExternalWriter("chatty", command=[str(script)], paths=[str(btrfs.mount)])
    with (
        pytest.raises(ShadowError, match=r"failed at prepare_backup: wrote a line nobody asked for"),
        shadow_set([str(btrfs.mount)], SetOptions(writers=[writer], auto_writers=False)),
    ):
        pass
    assert writer.pid is None
    assert no_process_runs(script)


def test_writers_asked_who_they_are_and_left_out_do_not_keep_running(btrfs, tmp_path):
    """`writers list`, and a set whose configured external writer lies on another volume, identify
    the writer (which starts its process) and then use it no further: the process is ended."""
    elsewhere = write_writer(
        tmp_path,
        "elsewhere",
        """
        class W(sdk.Writer):
            def identify(self, req):
                return [{"name": "elsewhere-data", "paths": ["/nonexistent-volume/data"]}]
    """,
    )
    write_config("elsewhere", f'type = "external"\ncommand = ["{sys.executable}", "{elsewhere}"]\n')
    try:
        (entry,) = [e for e in registry.inventory([]) if e.writer == "external:elsewhere"]
        assert entry.state == "stable" and entry.components[0].name == "elsewhere-data"
        assert no_process_runs(elsewhere), "writers list left the writer running"
        with shadow_set([str(btrfs.mount)]) as manifest:
            assert not [w for w in manifest.writers if w.name == "external"]
            assert no_process_runs(elsewhere), "the set left a writer it does not use running"
    finally:
        kill_leftovers(elsewhere)
