"""Shadowvault against restic on S3: same data, same local S3 server (moto on 127.0.0.1), same run.

    .venv/bin/python bench/s3.py [--size 256MiB] [--files 2000] [--tools shadowvault,restic] [--json]
    .venv/bin/python bench/compare.py --backend s3 [--size ...] [--files ...]    # the same, from compare

Each tool gets its own bucket on one moto server, reached through a counting proxy
(tests/fixtures/s3_faults.py, no faults) that sees every HTTP request either tool sends. Phases, each
run for every tool in turn before the next phase (so both back up the same bytes): first backup,
no-change backup (where a local cache earns its keep), backup after compare.py's deterministic 5 %
change, full restore of the latest snapshot (checked file by file against the source). Reported per
phase: wall time, throughput (data-set MiB / wall s), CPU seconds of the command, HTTP requests by
method and bytes sent back to the client, and the 1-minute load average at the start.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.s3_faults import FaultProxy  # noqa: E402
from tests.fixtures.s3_server import credentials_env, s3_server  # noqa: E402

from compare import parse_size  # noqa: E402
from dataset import Dataset, Params, compare, manifest  # noqa: E402
from measure import run_measured  # noqa: E402

PASSWORD = "bench-password"
PHASES = (
    ("first", "first backup"),
    ("unchanged", "no-change backup"),
    ("changed", "5%-changed backup"),
    ("restore", "full restore"),
)
TOOLS = ("shadowvault", "restic")
MIB = 1 << 20
RATIOS = (("time", "wall_s"), ("MiB/s", "mib_per_s"), ("CPU", "cpu_s"), ("requests", "requests"))


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
            SHADOWVAULT_NO_DAEMON="1",
        )
        (work / "config").mkdir(parents=True, exist_ok=True)
        (work / "state").mkdir(parents=True, exist_ok=True)
    else:
        env["RESTIC_PASSWORD"] = PASSWORD
    return env


def run_phase(argv: list[str], env: dict[str, str], proxy: FaultProxy, data_bytes: int) -> dict:
    """Run one command; its wall and CPU time, and the requests the proxy saw while it ran."""
    requests_before = collections.Counter(proxy.requests)
    bytes_before = proxy.bytes_to_clients
    m = run_measured(argv, env=env)
    if m.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({m.returncode}): {m.stderr.strip()[-2000:]}")
    requests = collections.Counter(proxy.requests)
    requests.subtract(requests_before)
    by_kind = {kind: n for kind, n in sorted(requests.items()) if n}
    return {
        "wall_s": round(m.wall, 2),
        "mib_per_s": round(data_bytes / MIB / m.wall, 1),
        "cpu_s": round(m.cpu, 2),
        "peak_rss_mib": round(m.peak_rss / MIB, 1),
        "load1": round(m.load, 2),
        "requests": sum(by_kind.values()),
        "requests_by_kind": by_kind,
        "mib_downloaded": round((proxy.bytes_to_clients - bytes_before) / MIB, 1),
    }


class Contender:
    """One tool with its bucket, commands and environment."""

    def __init__(self, tool: str, proxy: FaultProxy, dataset: Dataset, scratch: Path) -> None:
        self.tool = tool
        self.work = scratch / tool
        self.work.mkdir()
        self.target = self.work / "restore"
        self.bucket = f"bench-{tool}-{secrets.token_hex(3)}"
        url = proxy.url(self.bucket, "repo")
        self.commands = tool_commands(tool, url, self.work, dataset.data, self.target)
        self.env = tool_env(tool, self.work)

    def init(self, proxy: FaultProxy) -> None:
        if self.tool == "restic":
            subprocess.run(  # restic wants its bucket to exist on a server that is not AWS
                [sys.executable, "-c", "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], "
                 "region_name='us-east-1').create_bucket(Bucket=sys.argv[2])", proxy.endpoint, self.bucket],
                env=self.env, check=True,
            )  # fmt: skip
        run_phase(self.commands["init"], self.env, proxy, 1)


def run_bench(tools: list[str], proxy: FaultProxy, dataset: Dataset, scratch: Path, say) -> dict:  # type: ignore[no-untyped-def]
    """Every phase for every tool in turn; the restore is checked against the changed data."""
    contenders = [Contender(tool, proxy, dataset, scratch) for tool in tools]
    for c in contenders:
        c.init(proxy)
    size = dataset.total_bytes
    results: dict[str, dict] = {c.tool: {} for c in contenders}
    for key, title in PHASES[:3]:
        if key == "changed":
            change = dataset.mutate()
            say(f"changed {change['files']} files, {change['bytes'] / MIB:.1f} MiB")
        for c in contenders:
            say(f"{title}: {c.tool}")
            results[c.tool][key] = run_phase(c.commands["backup"], c.env, proxy, size)
    expected = manifest(dataset.data)
    for c in contenders:
        say(f"full restore: {c.tool}")
        row = run_phase(c.commands["restore"], c.env, proxy, size)
        problems = compare(expected, c.target / str(dataset.data).lstrip("/"))
        row["verified"] = not problems
        if problems:
            row["problems"] = problems[:10]
        results[c.tool]["restore"] = row
        shutil.rmtree(c.target, ignore_errors=True)
    return results


def ratio(results: dict, phase: str, field: str) -> str:
    ours, theirs = results.get("shadowvault", {}).get(phase), results.get("restic", {}).get(phase)
    if not ours or not theirs or not theirs.get(field):
        return "-"
    return f"{ours[field] / theirs[field]:.2f}x"


def print_table(report: dict) -> None:
    results = report["results"]
    print(
        f"data set: {report['size'] / MIB:.0f} MiB in {report['files']} files; moto server on 127.0.0.1 "
        f"through a counting proxy; {report['cpus']} CPUs, load average {report['load_start']} at the start, "
        f"{report['load_end']} at the end (wall times are noisy on a loaded machine; requests are exact)"
    )
    print(
        f"{'phase':<18}{'tool':<13}{'wall s':>8}{'MiB/s':>8}{'CPU s':>8}{'RSS MiB':>9}{'requests':>10}"
        f"{'MiB down':>10}  by kind"
    )
    for phase, title in PHASES:
        for tool, phases in results.items():
            r = phases[phase]
            kinds = ", ".join(f"{k} {n}" for k, n in r["requests_by_kind"].items())
            print(
                f"{title:<18}{tool:<13}{r['wall_s']:>8}{r['mib_per_s']:>8}{r['cpu_s']:>8}{r['peak_rss_mib']:>9}"
                f"{r['requests']:>10}{r['mib_downloaded']:>10}  {kinds}"
            )
    if "shadowvault" in results and "restic" in results:
        print("\nShadowvault / restic:")
        for phase, title in PHASES:
            figures = [(label, ratio(results, phase, field)) for label, field in RATIOS]
            print(f"  {title:<18} " + ", ".join(f"{label} {value}" for label, value in figures))
    for tool, phases in results.items():
        if not phases["restore"]["verified"]:
            print(f"{tool}: the restore differs from the source: {phases['restore']['problems']}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=parse_size, default=parse_size("256MiB"), help="data set size (256MiB)"
    )
    parser.add_argument("--files", type=int, default=2000, help="number of small files (2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", default="shadowvault,restic", help="comma-separated: shadowvault,restic")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def bench(size: int, files: int, seed: int, tools: list[str], as_json: bool) -> int:
    """Run the S3 comparison and print it; 0 when every restore matched the source."""
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        raise SystemExit(
            f"S3 bench: unknown tool(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TOOLS)}"
        )
    if "restic" in tools and not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic), or leave it out with --tools")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="sv-bench-s3-") as tmp:
        scratch = Path(tmp)
        dataset = Dataset(scratch / "dataset", Params(size, files, seed))
        dataset.root.mkdir()
        dataset.prepare(say)
        with s3_server() as server, FaultProxy(server.port) as proxy:
            results = run_bench(tools, proxy, dataset, scratch, say)
        report = {
            "size": dataset.total_bytes,
            "files": dataset.file_count,
            "cpus": os.cpu_count(),
            "load_start": load_start,
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "results": results,
        }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0 if all(r["restore"]["verified"] for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    return bench(args.size, args.files, args.seed, tools, args.json)


if __name__ == "__main__":
    sys.exit(main())
