"""Shared fixtures: real filesystems on loop devices, and private config/state directories."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from xdist.remote import Producer

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures import open_repositories
from tests.fixtures.loopfs import LoopFs, loop_filesystem, unmount_tree
from tests.fixtures.unprivileged import nobody_pythonpath  # noqa: F401 - a shared fixture
from tests.inprocess_cli import Shadowvault
from tests.scheduling import LongestFirstScheduling, longest_modules_first

# A Python process the tests start that dies of a fatal signal prints its threads' stacks to its
# stderr, which the failing test shows: a rare crash in CI is then a report, not a bare -11.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    longest_modules_first(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LongestFirstScheduling | None:
    """`-n N --dist loadscope` (make test): the long modules first (tests/scheduling.py)."""
    return LongestFirstScheduling(config, log) if config.getvalue("dist") == "loadscope" else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    open_repositories.record()
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Before the test's fixtures (a loop filesystem holding the repository) are torn down."""
    open_repositories.close_recorded()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point Shadowvault's config, state and cache directories at fresh temporary ones for every test."""
    base = tmp_path_factory.mktemp("sv-dirs")
    (base / "config" / "writers.d").mkdir(parents=True)
    (base / "state").mkdir()
    monkeypatch.setenv("SHADOWVAULT_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("SHADOWVAULT_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("SHADOWVAULT_CACHE_DIR", str(base / "cache"))  # the kept index, S3 objects
    return base


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh repository (made with the library, for a fast KDF) named through the environment the
    CLI reads; in process even on a machine where a daemon answers on the default socket."""
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    return {
        "SHADOWVAULT_REPOSITORY": str(repo),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
    }


@pytest.fixture
def sv(env: dict[str, str]) -> Shadowvault:
    """The `shadowvault` command, in process, on the `env` fixture's repository."""
    return Shadowvault(env)


@pytest.fixture
def mounts() -> Iterator[Callable[..., None]]:
    """`mount(*argv)`: a mount made by a test (the mount point last), unmounted with anything below
    it at the test's end."""
    made: list[Path] = []

    def mount(*argv: str | Path) -> None:
        subprocess.run(["mount", *map(str, argv)], check=True, capture_output=True)
        made.append(Path(argv[-1]))

    yield mount
    for path in reversed(made):
        unmount_tree(path)


@pytest.fixture
def btrfs() -> Iterator[LoopFs]:
    with loop_filesystem("btrfs") as fs:
        yield fs


@pytest.fixture
def xfs() -> Iterator[LoopFs]:
    with loop_filesystem("xfs") as fs:
        yield fs


@pytest.fixture
def ext4() -> Iterator[LoopFs]:
    with loop_filesystem("ext4") as fs:
        yield fs


@pytest.fixture(params=["btrfs", "xfs", "ext4"])
def any_fs(request: pytest.FixtureRequest) -> Iterator[LoopFs]:
    with loop_filesystem(request.param) as fs:
        yield fs


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli() -> CliRunner:
    """Run the `shadowvault` command as a user would, in a subprocess; returns the completed process."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300):
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "shadowvault.cli.launch", *map(str, args)],
            capture_output=True,
            text=True,
            input=input,
            env=full_env,
            timeout=timeout,
        )

    return run
