"""Jobs that run by themselves: jobs.d definitions, `shadowvault jobs run|status|list|install`.

Real repositories (made with the library for a fast KDF), the real CLI in a subprocess, a real btrfs
loop filesystem for the application-consistent run; the records, the metrics textfile and the unit
files are read back as a user (or Prometheus, or systemd) would.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowvault.client import Client
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.tools import require_tools
from tests.service.daemon import running_daemon


@pytest.fixture
def setup(private_dirs: Path, tmp_path: Path) -> dict[str, Path]:
    """A repository, its password file, jobs.d, and the metrics textfile pointed into tmp_path."""
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    password = tmp_path / "repo.pass"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    config = private_dirs / "config"
    jobs = config / "jobs.d"
    jobs.mkdir()
    metrics = tmp_path / "metrics" / "shadowvault.prom"
    (config / "shadowvault.toml").write_text(f'[metrics]\ntextfile = "{metrics}"\n')
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_bytes(b"alpha\n")
    (src / "b.bin").write_bytes(os.urandom(5000))
    return {"repo": repo, "password": password, "jobs": jobs, "metrics": metrics, "src": src}


def define(setup: dict[str, Path], name: str, body: str, **values: object) -> Path:
    """Write jobs.d/NAME.toml: repository and password file first, then `body`."""
    path = setup["jobs"] / f"{name}.toml"
    head = f'repository = "{setup["repo"]}"\npassword_file = "{setup["password"]}"\n'
    path.write_text(head + textwrap.dedent(body).format(**{k: str(v) for k, v in setup.items()}, **values))
    return path


def status_json(cli, name: str) -> dict:
    done = cli("jobs", "status", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def gauges(path: Path) -> dict[str, dict[str, float]]:
    """metric name -> {job label: value} from a textfile."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels["job"]] = sample.value
    return found


def test_run_makes_a_snapshot_that_restores_and_records_it(cli, setup, tmp_path):
    define(
        setup,
        "home",
        """
        schedule = "daily"
        paths = ["{src}"]
        provider = "none"
        tags = ["nightly"]
        """,
    )
    done = cli("jobs", "run", "home")
    assert done.returncode == 0, done.stderr

    record = status_json(cli, "home")
    assert record["exit_status"] == 0 and record["status"] == "success"
    assert record["errors"] == [] and record["added_bytes"] > 0
    assert record["consistency"] == {"files": "none"}
    env = {"SHADOWVAULT_REPOSITORY": str(setup["repo"]), "SHADOWVAULT_PASSWORD": PASSWORD}
    target = tmp_path / "restored"
    restored = cli("restore", record["snapshot_id"], "--target", target, env=env)
    assert restored.returncode == 0, restored.stderr
    below = target / str(setup["src"]).lstrip("/")
    assert (below / "sub" / "a.txt").read_bytes() == b"alpha\n"
    assert (below / "b.bin").read_bytes() == (setup["src"] / "b.bin").read_bytes()
    listing = json.loads(cli("snapshots", "--json", env=env).stdout)
    assert sorted(listing[0]["tags"]) == ["job:home", "nightly"]

    everything = json.loads(cli("jobs", "status", "--json").stdout)
    assert [r["job"] for r in everything["jobs"]] == ["home"]
    human = cli("jobs", "status")
    assert human.returncode == 0 and record["snapshot_id"][:8] in human.stdout

    metrics = gauges(setup["metrics"])
    assert metrics["shadowvault_job_last_exit_status"] == {"home": 0.0}
    assert metrics["shadowvault_job_last_added_bytes"]["home"] == record["added_bytes"]
    assert metrics["shadowvault_job_last_success_timestamp_seconds"]["home"] == record["finished"]
    assert metrics["shadowvault_job_last_duration_seconds"]["home"] == record["duration"]

    listed = cli("jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(j["name"], j["schedule"]) for j in json.loads(listed.stdout)["jobs"]] == [("home", "daily")]


def test_a_job_takes_the_backup_commands_exclude_options(cli, setup, mounts):
    """exclude_caches, exclude_larger_than and one_file_system do what the backup command's flags do."""
    cache = setup["src"] / "cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    (cache / "blob").write_bytes(b"cached\n")
    (setup["src"] / "big.iso").write_bytes(b"\0" * 200_000)
    (setup["src"] / "mnt").mkdir()
    mounts("-t", "tmpfs", "tmpfs", setup["src"] / "mnt")
    (setup["src"] / "mnt" / "elsewhere").write_bytes(b"on another filesystem\n")
    define(
        setup,
        "lean",
        """
        schedule = "daily"
        paths = ["{src}"]
        provider = "none"
        exclude_caches = true
        exclude_larger_than = "100k"
        one_file_system = true
        """,
    )
    done = cli("jobs", "run", "lean")
    assert done.returncode == 0, done.stderr
    env = {"SHADOWVAULT_REPOSITORY": str(setup["repo"]), "SHADOWVAULT_PASSWORD": PASSWORD}
    stored = set(cli("ls", "latest", env=env).stdout.split())
    src = str(setup["src"])
    assert {f"{src}/sub/a.txt", f"{src}/b.bin", f"{src}/cache/CACHEDIR.TAG", f"{src}/mnt"} <= stored
    assert not {f"{src}/cache/blob", f"{src}/big.iso", f"{src}/mnt/elsewhere"} & stored


def test_a_job_takes_the_restic_options_of_the_backup_command(cli, setup):
    """exclude_if_present, iexcludes, ignore_inode/ignore_ctime and with_atime, as the command's flags."""
    src = setup["src"]
    (src / "tagged").mkdir()
    (src / "tagged" / ".nobackup").write_text("")
    (src / "tagged" / "data").write_text("left out\n")
    (src / "NOTES.TMP").write_text("left out\n")
    define(
        setup,
        "restic",
        """
        schedule = "daily"
        paths = ["{src}"]
        provider = "none"
        exclude_if_present = [".nobackup"]
        iexcludes = ["*.tmp"]
        ignore_inode = true
        ignore_ctime = true
        with_atime = true
        """,
    )
    assert cli("jobs", "run", "restic").returncode == 0
    (src / "sub" / "a.txt").chmod(0o600)  # a new ctime: not read again under ignore_ctime
    done = cli("jobs", "run", "restic")
    assert done.returncode == 0, done.stderr
    record = status_json(cli, "restic")
    assert (record["files_changed"], record["files_unmodified"]) == (0, 3)  # a.txt, b.bin, the tag
    env = {"SHADOWVAULT_REPOSITORY": str(setup["repo"]), "SHADOWVAULT_PASSWORD": PASSWORD}
    stored = set(cli("ls", "latest", env=env).stdout.split())
    assert {f"{src}/tagged/.nobackup", f"{src}/sub/a.txt", f"{src}/b.bin"} <= stored
    assert not {f"{src}/tagged/data", f"{src}/NOTES.TMP"} & stored


def test_retention_keeps_the_last_two_and_prunes(cli, setup):
    define(
        setup,
        "rot",
        """
        schedule = "hourly"
        paths = ["{src}"]
        provider = "none"

        [retention]
        keep_last = 2
        prune = true
        """,
    )
    ids = []
    for round_ in range(3):
        (setup["src"] / f"new-{round_}.bin").write_bytes(os.urandom(3000))
        done = cli("jobs", "run", "rot")
        assert done.returncode == 0, done.stderr
        ids.append(status_json(cli, "rot")["snapshot_id"])
    record = status_json(cli, "rot")
    assert record["forgotten"] == [ids[0]] and record["pruned"]
    with Repository.open(setup["repo"], PASSWORD) as repo:
        assert sorted(sid for sid, _ in repo.list_snapshots()) == sorted(ids[1:])


def test_a_job_on_btrfs_records_the_application_consistent_grade(cli, setup, btrfs, private_dirs):
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "app.state").write_text("v1\n")
    (private_dirs / "config" / "writers.d" / "app.toml").write_text(
        textwrap.dedent(f"""
        name = "app"
        freeze = ["/bin/sh", "-c", "echo frozen > {data}/app.state"]
        thaw = ["/bin/sh", "-c", "echo thawed > {data}/app.state"]
        paths = ["{data}"]
        """)
    )
    define(
        setup,
        "app",
        """
        schedule = "*-*-* 02:00:00"
        paths = ["{mount}"]
        writers = ["app"]
        """,
        mount=btrfs.mount,
    )
    done = cli("jobs", "run", "app")
    assert done.returncode == 0, done.stderr
    record = status_json(cli, "app")
    assert record["consistency"] == {"files": "crash", "app": "application"}
    with Repository.open(setup["repo"], PASSWORD) as repo:
        snapshot_id, snapshot = repo.find_snapshot("latest")
    assert snapshot_id == record["snapshot_id"] and snapshot.manifest is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('schedule = "daily"\npaths = ["/srv"]\nretain = 3\n', "unknown key 'retain'"),
        ('schedule = "every blue moon"\npaths = ["/srv"]\n', "not valid OnCalendar syntax"),
        ('schedule = "daily"\npaths = "/srv"\n', "`paths` must be a list"),
        ('schedule = "daily"\npaths = ["/srv"]\n[retention]\nkeep_last = "two"\n', "retention.keep_last"),
        ('schedule = "daily"\npaths = ["/srv"]\none_file_system = "yes"\n', "`one_file_system` must be true"),
        ('schedule = "daily"\npaths = ["/srv"]\nexclude_larger_than = "lots"\n', "takes a size like"),
        (
            'schedule = "daily"\npaths = ["/srv"]\nexclude_if_present = [":HDR"]\n',
            "`exclude_if_present` takes",
        ),
        ('schedule = "daily"\npaths = ["/srv"]\nignore_ctime = 1\n', "`ignore_ctime` must be true"),
    ],
)
def test_bad_definitions_are_one_line_with_exit_2(cli, setup, body, message):
    require_tools("systemd-analyze")
    define(setup, "bad", body)
    done = cli("jobs", "run", "bad")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "bad.toml" in lines[0], done.stderr
    listed = cli("jobs", "list")
    assert listed.returncode == 2 and message in listed.stderr
    assert "no jobs defined" not in listed.stdout + listed.stderr  # one is defined, and unusable


def test_a_world_writable_definition_is_refused(cli, setup):
    path = define(setup, "open", 'schedule = "daily"\npaths = ["{src}"]\n')
    path.chmod(0o666)
    done = cli("jobs", "run", "open")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "must not be writable by group or others" in done.stderr


def test_an_environment_file_is_checked_like_the_definition(cli, setup, tmp_path):
    credentials = tmp_path / "s3.env"
    credentials.write_text("AWS_ACCESS_KEY=the-wrong-name\n")
    credentials.chmod(0o666)
    path = define(
        setup, "s3", 'schedule = "daily"\npaths = ["{src}"]\nenvironment_file = "{env}"\n', env=credentials
    )
    refused = cli("jobs", "run", "s3")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "must not be writable by group or others" in refused.stderr
    credentials.chmod(0o600)
    s3 = path.read_text().replace(f'"{setup["repo"]}"', '"s3:http://127.0.0.1:1/bkt/repo"')
    path.write_text(s3)
    failed = cli("jobs", "run", "s3")  # read when the job runs: nothing is sent anywhere
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"shadowvault: error: job s3: {credentials}, line 1: AWS_ACCESS_KEY is not one of AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, "
        "AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE"
    ]
    path.write_text(s3.replace(f'"{credentials}"', '"s3.env"'))
    relative = cli("jobs", "list")
    assert relative.returncode == 2 and "`environment_file` must be an absolute path" in relative.stderr


@pytest.mark.parametrize("name", ["a/b", "../etc", "-x"])
def test_a_bad_job_name_is_refused(cli, setup, name):
    done = cli("jobs", "run", "--", name)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "invalid job name" in done.stderr


def test_a_failing_job_records_exit_1_and_runs_on_failure(cli, setup, tmp_path):
    report = tmp_path / "on-failure.txt"
    script = f'echo "$SHADOWVAULT_JOB $SHADOWVAULT_JOB_EXIT_STATUS" > {report}'
    define(
        setup,
        "broken",
        """
        schedule = "daily"
        paths = ["{src}"]
        provider = "none"
        on_failure = ["/bin/sh", "-c", '{script}']
        """,
        script=script,
    )
    shutil.rmtree(setup["repo"])
    done = cli("jobs", "run", "broken")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "job broken:" in done.stderr, done.stderr
    assert report.read_text() == "broken 1\n"
    record = status_json(cli, "broken")
    assert record["exit_status"] == 1 and record["status"] == "failed" and record["snapshot_id"] is None
    assert str(setup["repo"]) in record["errors"][0]
    assert record["on_failure"] == "exit status 0"
    metrics = gauges(setup["metrics"])
    assert metrics["shadowvault_job_last_exit_status"] == {"broken": 1.0}
    assert metrics["shadowvault_job_last_success_timestamp_seconds"] == {"broken": 0.0}


def test_install_writes_the_units(cli, setup, private_dirs, tmp_path):
    define(setup, "home", 'schedule = "Mon..Fri *-*-* 03:15:00"\npaths = ["{src}"]\n')
    define(setup, "etc", 'schedule = "weekly"\npaths = ["/etc"]\n')
    unit_dir = tmp_path / "units"
    done = cli("jobs", "install", "--unit-dir", unit_dir, "--no-enable")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(unit_dir)) == [
        "shadowvault-job@.service",
        "shadowvault-job@etc.timer",
        "shadowvault-job@home.timer",
        "shadowvault.service",
        "shadowvault.socket",
    ]
    timer = (unit_dir / "shadowvault-job@home.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 03:15:00\n" in timer and "Persistent=true\n" in timer
    assert "OnCalendar=weekly\n" in (unit_dir / "shadowvault-job@etc.timer").read_text()
    service = (unit_dir / "shadowvault-job@.service").read_text()
    assert f"ExecStart={sys.executable} -m shadowvault.cli.launch jobs run %i\n" in service
    daemon = (unit_dir / "shadowvault.service").read_text()
    assert f"ExecStart={sys.executable} -m shadowvault.cli.launch daemon\n" in daemon
    assert "LimitNOFILE=65536\n" in daemon
    assert "ListenStream=/run/shadowvault/api.sock\n" in (unit_dir / "shadowvault.socket").read_text()
    # the directories install ran with (the test's own): the services look where the timers came from
    for unit in (service, daemon):
        assert f'Environment="SHADOWVAULT_CONFIG_DIR={private_dirs / "config"}"\n' in unit
        assert f'Environment="SHADOWVAULT_STATE_DIR={private_dirs / "state"}"\n' in unit
    _verify(unit_dir)


def _verify(unit_dir: Path) -> None:
    """systemd's own reading of the units finds nothing wrong."""
    require_tools("systemd-analyze")
    units = [str(unit_dir / name) for name in sorted(os.listdir(unit_dir)) if "@." not in name]
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr


def test_install_carries_a_directory_with_spaces_quotes_and_percents(cli, setup, tmp_path):
    state = tmp_path / 'state "100%" here'
    unit_dir = tmp_path / "units"
    done = cli(
        "jobs", "install", "--unit-dir", unit_dir, "--no-enable", env={"SHADOWVAULT_STATE_DIR": str(state)}
    )
    assert done.returncode == 0, done.stderr
    escaped = str(state).replace('"', '\\"').replace("%", "%%")
    for name in ("shadowvault-job@.service", "shadowvault.service"):
        assert f'Environment="SHADOWVAULT_STATE_DIR={escaped}"\n' in (unit_dir / name).read_text()
    _verify(unit_dir)


def test_last_success_survives_a_failed_run(cli, setup):
    define(setup, "flaky", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    assert cli("jobs", "run", "flaky").returncode == 0
    succeeded = status_json(cli, "flaky")
    setup["password"].write_text("not the password\n")
    failed = cli("jobs", "run", "flaky")
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    record = status_json(cli, "flaky")
    assert record["status"] == "failed" and record["last_success"] == succeeded["finished"]
    metrics = gauges(setup["metrics"])
    assert metrics["shadowvault_job_last_exit_status"] == {"flaky": 1.0}
    assert metrics["shadowvault_job_last_success_timestamp_seconds"] == {"flaky": succeeded["finished"]}


def test_a_job_already_running_is_not_run_twice(cli, setup, private_dirs):
    define(setup, "busy", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    records = private_dirs / "state" / "jobs"
    records.mkdir()
    with open(records / ".busy.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = cli("jobs", "run", "busy")
    assert done.returncode == 1 and "job busy is already running" in done.stderr
    assert cli("jobs", "status", "busy").returncode == 1, "the refused run records nothing"
    assert cli("jobs", "run", "busy").returncode == 0


def test_install_again_removes_the_timer_of_a_removed_job(cli, setup, tmp_path):
    define(setup, "keep", 'schedule = "daily"\npaths = ["{src}"]\n')
    gone = define(setup, "gone", 'schedule = "daily"\npaths = ["{src}"]\n')
    unit_dir = tmp_path / "units"
    assert cli("jobs", "install", "--unit-dir", unit_dir, "--no-enable").returncode == 0
    (unit_dir / "other.timer").write_text("[Timer]\nOnCalendar=daily\n")
    gone.unlink()
    done = cli("jobs", "install", "--unit-dir", unit_dir, "--no-enable", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == [str(unit_dir / "shadowvault-job@gone.timer")]
    timers = sorted(n for n in os.listdir(unit_dir) if n.endswith(".timer"))
    assert timers == ["other.timer", "shadowvault-job@keep.timer"]


def _failing_job(setup: dict[str, Path], name: str, tmp_path: Path) -> None:
    """jobs.d/NAME.toml whose repository does not exist: each run fails (exit 1) and is recorded."""
    (setup["jobs"] / f"{name}.toml").write_text(
        f'schedule = "daily"\nrepository = "{tmp_path / "nowhere"}"\npassword_file = "{setup["password"]}"\n'
        f'paths = ["{setup["src"]}"]\nprovider = "none"\n'
    )


def test_a_removed_job_leaves_the_status_and_the_metrics(cli, setup, private_dirs, tmp_path):
    """A job whose definition is gone no longer shows in `jobs status` nor in the metrics (the alert
    jobs.md recommends would fire for it forever), and its record goes at the next install or run."""
    define(setup, "keep", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    for name in ("bad", "gone"):
        _failing_job(setup, name, tmp_path)
        assert cli("jobs", "run", name).returncode == 1
    assert cli("jobs", "run", "keep").returncode == 0
    assert set(gauges(setup["metrics"])["shadowvault_job_last_success_timestamp_seconds"]) == {
        "bad",
        "gone",
        "keep",
    }
    records = private_dirs / "state" / "jobs"
    (setup["jobs"] / "bad.toml").unlink()
    (setup["jobs"] / "gone.toml").unlink()

    status = cli("jobs", "status", "--json")
    assert [r["job"] for r in json.loads(status.stdout)["jobs"]] == ["keep"], status.stderr
    one = cli("jobs", "status", "bad")
    assert one.returncode == 1 and one.stderr == (
        f"shadowvault: error: no job 'bad': {setup['jobs'] / 'bad.toml'} does not exist\n"
    )

    installed = cli("jobs", "install", "--unit-dir", tmp_path / "units", "--no-enable")
    assert installed.returncode == 0, installed.stderr
    assert sorted(p.name for p in records.glob("*.json")) == ["keep.json"]
    metrics = gauges(setup["metrics"])
    assert metrics["shadowvault_job_last_success_timestamp_seconds"].keys() == {"keep"}
    assert metrics["shadowvault_job_last_exit_status"] == {"keep": 0.0}

    _failing_job(setup, "later", tmp_path)
    assert cli("jobs", "run", "later").returncode == 1
    (setup["jobs"] / "later.toml").unlink()
    assert cli("jobs", "run", "keep").returncode == 0  # a run rewrites the metrics: of defined jobs only
    assert gauges(setup["metrics"])["shadowvault_job_last_exit_status"] == {"keep": 0.0}
    assert sorted(p.name for p in records.glob("*.json")) == ["keep.json"]


def test_a_run_stopped_by_sigterm_is_recorded(setup, btrfs, private_dirs, tmp_path):
    """systemd stopping the unit mid-run: the set is aborted, the run recorded with 143, on_failure run."""
    marker = tmp_path / "freezing"
    report = tmp_path / "on-failure.txt"
    (btrfs.mount / "data").mkdir()
    (private_dirs / "config" / "writers.d" / "slow.toml").write_text(
        textwrap.dedent(f"""
        name = "slow"
        freeze = ["/bin/sh", "-c", "touch {marker}; sleep 60"]
        thaw = ["/bin/true"]
        timeout = 120
        paths = ["{btrfs.mount}/data"]
        """)
    )
    define(
        setup,
        "stopped",
        """
        schedule = "daily"
        paths = ["{mount}"]
        writers = ["slow"]
        on_failure = ["/bin/sh", "-c", 'echo "$SHADOWVAULT_JOB_EXIT_STATUS" > {report}']
        """,
        mount=btrfs.mount,
        report=report,
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", "jobs", "run", "stopped"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(1200):
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), child.communicate()
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 143, stderr
    record = json.loads((private_dirs / "state" / "jobs" / "stopped.json").read_text())
    assert record["exit_status"] == 143 and record["status"] == "failed"
    assert "SIGTERM" in record["errors"][0]
    assert report.read_text() == "143\n"
    assert not list(btrfs.mount.glob(".shadowvault/*")), "the aborted set left no shadow behind"
    assert not list((private_dirs / "state" / "sets").glob("*.json")), "nor a shadow-set record"


def test_a_damaged_record_stops_no_run_and_hides_no_other_job(cli, setup, private_dirs):
    for name in ("damaged", "other"):
        define(setup, name, 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
        assert cli("jobs", "run", name).returncode == 0
    (private_dirs / "state" / "jobs" / "damaged.json").write_text('{"job": "damaged", "status": ')
    listed = cli("jobs", "status", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["job"] for r in json.loads(listed.stdout)["jobs"]] == ["other"]
    with running_daemon() as daemon, Client(daemon.socket) as client:
        assert "shadowvault_job_last_exit_status" in client.metrics()
        assert [j["last_run"] is None for j in client.jobs()] == [True, False]
    ran = cli("jobs", "run", "damaged")  # the record is replaced, not in the way
    assert ran.returncode == 0, ran.stderr
    assert status_json(cli, "damaged")["status"] == "success"
    assert gauges(setup["metrics"])["shadowvault_job_last_exit_status"] == {"damaged": 0.0, "other": 0.0}
