"""Shadowvault against restic on S3: same data, same local S3 server (moto on 127.0.0.1), same run.

    .venv/bin/python bench/s3.py [--size 256MiB] [--files 2000] [--tools shadowvault,restic] [--json]

Each tool gets its own bucket on one moto server, reached through a counting proxy
(tests/fixtures/s3_faults.py, no faults) that sees every HTTP request either tool sends. Phases:
first backup, no-change backup (where a local cache earns its keep), full restore of the latest
snapshot (checked file by file against the source). Reported per phase: wall time, throughput
(data-set MiB / wall s), HTTP requests by method and bytes sent back to the client.

moto is a Python server: absolute throughput says more about it than about either client; the
request counts and the ratios between the tools are the point. Nothing here needs root.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.s3_faults import FaultProxy  # noqa: E402
from tests.fixtures.s3_server import credentials_env, s3_server  # noqa: E402

from compare import parse_size  # noqa: E402
from dataset import Dataset, Params, compare, manifest  # noqa: E402

PASSWORD = "bench-password"
PHASES = ("first", "unchanged", "restore")
MIB = 1 << 20


def tool_commands(tool: str, url: str, work: Path, data: Path, target: Path) -> dict[str, list[str]]:
    if tool == "shadowvault":
        exe = [sys.executable, "-m", "shadowvault.cli.main"]
        return {
            "init": [*exe, "init", "--repo", url],
            "backup": [*exe, "backup", "--repo", url, "--provider", "none", str(data)],
            "restore": [*exe, "restore", "latest", "--repo", url, "--target", str(target)],
        }
    exe = [shutil.which("restic") or "restic", "-r", url, "--cache-dir", str(work / "cache")]
    return {
        "init": [*exe, "init", "-q", "--repository-version", "2"],
        "backup": [*exe, "backup", "-q", str(data)],
        "restore": [*exe, "restore", "latest", "-q", "--target", str(target)],
    }


def tool_env(tool: str, work: Path) -> dict[str, str]:
    env = {**os.environ, **credentials_env()}
    if tool == "shadowvault":
        env.update(
            SHADOWVAULT_PASSWORD=PASSWORD,
            SHADOWVAULT_CACHE_DIR=str(work / "cache"),
            SHADOWVAULT_CONFIG_DIR=str(work / "config"),
            SHADOWVAULT_STATE_DIR=str(work / "state"),
        )
        (work / "config").mkdir(parents=True, exist_ok=True)
        (work / "state").mkdir(parents=True, exist_ok=True)
    else:
        env["RESTIC_PASSWORD"] = PASSWORD
    return env


def run_phase(argv: list[str], env: dict[str, str], proxy: FaultProxy, data_bytes: int) -> dict:
    requests_before = collections.Counter(proxy.requests)
    bytes_before = proxy.bytes_to_clients
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    requests = collections.Counter(proxy.requests)
    requests.subtract(requests_before)
    by_kind = {kind: n for kind, n in sorted(requests.items()) if n}
    return {
        "wall_s": round(wall, 2),
        "mib_per_s": round(data_bytes / MIB / wall, 1),
        "requests": sum(by_kind.values()),
        "requests_by_kind": by_kind,
        "mib_downloaded": round((proxy.bytes_to_clients - bytes_before) / MIB, 1),
    }


def bench_tool(tool: str, proxy: FaultProxy, dataset: Dataset, expected: dict, scratch: Path) -> dict:
    work = scratch / tool
    target = work / "restore"
    work.mkdir()
    url = proxy.url(f"bench-{tool}-{secrets.token_hex(3)}", "repo")
    commands = tool_commands(tool, url, work, dataset.data, target)
    env = tool_env(tool, work)
    if tool == "restic":
        subprocess.run(  # restic wants its bucket to exist on a server that is not AWS
            [sys.executable, "-c", "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], "
             "region_name='us-east-1').create_bucket(Bucket=sys.argv[2])", proxy.endpoint, url.split("/")[3]],
            env=env, check=True,
        )  # fmt: skip
    run_phase(commands["init"], env, proxy, 1)
    size = dataset.total_bytes
    results = {
        "first": run_phase(commands["backup"], env, proxy, size),
        "unchanged": run_phase(commands["backup"], env, proxy, size),
        "restore": run_phase(commands["restore"], env, proxy, size),
    }
    problems = compare(expected, target / str(dataset.data).lstrip("/"))
    results["restore"]["verified"] = not problems
    if problems:
        results["restore"]["problems"] = problems[:10]
    return results


def print_table(results: dict, size: int, files: int) -> None:
    print(
        f"data set: {size / MIB:.0f} MiB in {files} files; moto server on 127.0.0.1 through a counting proxy"
    )
    print(f"{'phase':<11}{'tool':<13}{'wall s':>8}{'MiB/s':>8}{'requests':>10}{'MiB down':>10}  by kind")
    for phase in PHASES:
        for tool, phases in results.items():
            r = phases[phase]
            kinds = ", ".join(f"{k} {n}" for k, n in r["requests_by_kind"].items())
            print(
                f"{phase:<11}{tool:<13}{r['wall_s']:>8}{r['mib_per_s']:>8}{r['requests']:>10}"
                f"{r['mib_downloaded']:>10}  {kinds}"
            )
    for tool, phases in results.items():
        if not phases["restore"]["verified"]:
            print(f"{tool}: the restore differs from the source: {phases['restore']['problems']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=parse_size, default=parse_size("256MiB"), help="data set size (256MiB)"
    )
    parser.add_argument("--files", type=int, default=2000, help="number of small files (2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", default="shadowvault,restic", help="comma-separated: shadowvault,restic")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    if "restic" in tools and not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic), or leave it out with --tools")
    with tempfile.TemporaryDirectory(prefix="sv-bench-s3-") as tmp:
        scratch = Path(tmp)
        dataset = Dataset(scratch / "dataset", Params(args.size, args.files, args.seed))
        dataset.root.mkdir()
        dataset.prepare(lambda message: print(message, file=sys.stderr))
        expected = manifest(dataset.data)
        with s3_server() as server, FaultProxy(server.port) as proxy:
            results = {tool: bench_tool(tool, proxy, dataset, expected, scratch) for tool in tools}
    if args.json:
        print(
            json.dumps(
                {"size": dataset.total_bytes, "files": dataset.file_count, "results": results}, indent=2
            )
        )
    else:
        print_table(results, dataset.total_bytes, dataset.file_count)
    return 0 if all(r["restore"]["verified"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
